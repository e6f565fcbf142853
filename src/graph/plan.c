/* The memory planner: every intermediate buffer of a run gets an offset in one arena, so that
 * buffers alive at the same time never overlap (greedy by size, as TFLite's arena planner). */
#include "graph/graph.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 64

typedef struct item {
  size_t size;
  int first, last; /* node positions during which the buffer is alive */
  size_t *offset;  /* where the result goes */
} item;

static int by_size_desc(const void *a, const void *b) {
  const item *x = a, *y = b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return x->first - y->first;
}

static int by_offset(const void *a, const void *b) {
  const item *x = *(item *const *)a, *y = *(item *const *)b;
  return *x->offset < *y->offset ? -1 : *x->offset > *y->offset;
}

kiln_status kx_plan_build(const kx_graph *g, const size_t *value_size, const size_t *scratch_size, kx_plan *p) {
  int n = g->n_vals + g->n_nodes;
  item *items = malloc(((size_t)n + 1) * sizeof *items);
  item **live = malloc(((size_t)n + 1) * sizeof *live);
  if (!items || !live) {
    free(items);
    free(live);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory planning the run");
  }
  int count = 0;
  for (int v = 0; v < g->n_vals; v++) {
    p->offset[v] = SIZE_MAX;
    p->size[v] = value_size[v];
    const kx_val *val = &g->vals[v];
    /* a view records no size; a view op that had to copy (training Dropout) gets a slot */
    if (val->kind != KX_VAL_NODE || value_size[v] == 0) continue;
    items[count++] = (item){(value_size[v] + ALIGN - 1) / ALIGN * ALIGN, val->producer, val->last_use, &p->offset[v]};
  }
  for (int i = 0; i < g->n_nodes; i++) {
    p->scratch_offset[i] = SIZE_MAX;
    p->scratch_size[i] = scratch_size[i];
    if (scratch_size[i]) items[count++] = (item){(scratch_size[i] + ALIGN - 1) / ALIGN * ALIGN, i, i, &p->scratch_offset[i]};
  }
  qsort(items, (size_t)count, sizeof *items, by_size_desc);
  size_t arena = 0;
  for (int i = 0; i < count; i++) {
    /* the already placed buffers whose lifetimes overlap this one, by offset */
    int k = 0;
    for (int j = 0; j < i; j++)
      if (items[j].first <= items[i].last && items[i].first <= items[j].last) live[k++] = &items[j];
    qsort(live, (size_t)k, sizeof *live, by_offset);
    size_t at = 0;
    for (int j = 0; j < k; j++) {
      if (at + items[i].size <= *live[j]->offset) break;
      size_t end = *live[j]->offset + live[j]->size;
      if (end > at) at = end;
    }
    *items[i].offset = at;
    if (at + items[i].size > arena) arena = at + items[i].size;
  }
  p->arena_size = arena;
  free(items);
  free(live);
  return NULL;
}

void kx_plan_release(kx_plan *p) {
  free(p->key);
  free(p->offset);
  free(p->size);
  free(p->scratch_offset);
  free(p->scratch_size);
  memset(p, 0, sizeof *p);
}
