/* Object detection: NonMaxSuppression.
 *
 * Per batch and class, boxes scoring above score_threshold are visited in descending score order
 * (ties: lower box index first) and kept unless they overlap an already kept box by an IoU above
 * iou_threshold, until max_output_boxes_per_class are kept. The output lists [batch, class, box]
 * triples batch by batch, class by class, each class's boxes in the order they were kept: the
 * order of the ONNX reference and ONNX Runtime. */
#include "ops/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct candidate {
  float score;
  int64_t box;
} candidate;

static int by_score(const void *pa, const void *pb) {
  const candidate *a = pa, *b = pb;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return (a->box > b->box) - (a->box < b->box);
}

/* A box as (ymin, xmin, ymax, xmax), from corners in either order or from center and size. */
static void box_corners(const float *b, int center_point_box, float *out) {
  if (center_point_box) {
    out[0] = b[1] - b[3] / 2, out[1] = b[0] - b[2] / 2;
    out[2] = b[1] + b[3] / 2, out[3] = b[0] + b[2] / 2;
    return;
  }
  out[0] = b[0] < b[2] ? b[0] : b[2], out[2] = b[0] < b[2] ? b[2] : b[0];
  out[1] = b[1] < b[3] ? b[1] : b[3], out[3] = b[1] < b[3] ? b[3] : b[1];
}

/* Whether IoU(a, b) > threshold; boxes without area never suppress anything. */
static int overlaps(const float *a, const float *b, float threshold) {
  float ih = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
  float iw = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
  if (ih <= 0 || iw <= 0) return 0;
  float inter = ih * iw;
  float area_a = (a[2] - a[0]) * (a[3] - a[1]), area_b = (b[2] - b[0]) * (b[3] - b[1]);
  float uni = area_a + area_b - inter;
  if (area_a <= 0 || area_b <= 0 || uni <= 0) return 0;
  return inter / uni > threshold;
}

/* Optional scalar input i of the given dtype (a scalar or a one-element tensor). */
static kiln_status optional_scalar(const kx_ctx *c, int i, kiln_dtype dtype, const char *name, double *out) {
  const kiln_tensor *t = kx_input(c, i);
  if (!t) return NULL;
  if (t->dtype != dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be %s, got %s", name, kiln_dtype_name(dtype), kiln_dtype_name(t->dtype));
  return kx_read_scalar(t, name, out);
}

static kiln_status nms_prepare(kx_node *n) {
  int64_t cpb = kx_attr_int(n->proto, "center_point_box", 0);
  if (cpb != 0 && cpb != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "center_point_box must be 0 or 1, got %lld", (long long)cpb);
  return NULL;
}

static kiln_status nms_run(kx_ctx *c) {
  const kiln_tensor *boxes, *scores;
  kiln_status s;
  if ((s = kx_require(c, 0, &boxes)) || (s = kx_require(c, 1, &scores)) ||
      (s = kx_check_dtype(boxes, 0, KX_BIT(KILN_FLOAT))) || (s = kx_check_dtype(scores, 1, KX_BIT(KILN_FLOAT))))
    return s;
  char b1[96], b2[96];
  if (boxes->rank != 3 || boxes->dims[2] != 4 || scores->rank != 3 || scores->dims[0] != boxes->dims[0] ||
      scores->dims[2] != boxes->dims[1])
    return kiln_error(KILN_INVALID_ARGUMENT, "boxes must be [batches, boxes, 4] and scores [batches, classes, boxes], got %s and %s",
                      kiln_tensor_describe(boxes, b1, sizeof b1), kiln_tensor_describe(scores, b2, sizeof b2));
  double max_out = 0, iou = 0, score_min = 0;
  if ((s = optional_scalar(c, 2, KILN_INT64, "max_output_boxes_per_class", &max_out)) ||
      (s = optional_scalar(c, 3, KILN_FLOAT, "iou_threshold", &iou)) ||
      (s = optional_scalar(c, 4, KILN_FLOAT, "score_threshold", &score_min)))
    return s;
  if (iou < 0 || iou > 1) return kiln_error(KILN_INVALID_ARGUMENT, "iou_threshold must be in [0, 1], got %g", iou);
  int has_score_min = kx_input(c, 4) != NULL;
  int center = (int)kx_attr_int(c->node->proto, "center_point_box", 0);
  int64_t batches = boxes->dims[0], count = boxes->dims[1], classes = scores->dims[1];
  int64_t keep_max = max_out < (double)count ? (int64_t)(max_out > 0 ? max_out : 0) : count;
  /* scratch: the candidates of one class, the corners of one batch's boxes, and every selection */
  size_t bytes = (size_t)count * (sizeof(candidate) + sizeof(int64_t) + 4 * sizeof(float)) +
                 (size_t)(batches * classes * keep_max) * 3 * sizeof(int64_t);
  char *mem = kx_scratch(c, bytes);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %lld boxes", (long long)count);
  candidate *cand = (candidate *)mem;
  int64_t *kept = (int64_t *)(cand + count), *selected = kept + count;
  float *corners = (float *)(selected + batches * classes * keep_max * 3);
  int64_t n_selected = 0;
  float thr = (float)iou;
  for (int64_t b = 0; b < batches && keep_max > 0; b++) {
    for (int64_t i = 0; i < count; i++)
      box_corners((const float *)boxes->data + (b * count + i) * 4, center, corners + 4 * i);
    for (int64_t cl = 0; cl < classes; cl++) {
      const float *sc = (const float *)scores->data + (b * classes + cl) * count;
      int64_t n_cand = 0, n_kept = 0;
      /* NaN scores cannot be ranked: they are never candidates */
      for (int64_t i = 0; i < count; i++)
        if (sc[i] == sc[i] && (!has_score_min || sc[i] > (float)score_min)) cand[n_cand++] = (candidate){sc[i], i};
      qsort(cand, (size_t)n_cand, sizeof *cand, by_score);
      for (int64_t k = 0; k < n_cand && n_kept < keep_max; k++) {
        const float *box = corners + 4 * cand[k].box;
        int64_t j = 0;
        while (j < n_kept && !overlaps(corners + 4 * kept[j], box, thr)) j++;
        if (j < n_kept) continue;
        kept[n_kept++] = cand[k].box;
        int64_t *row = selected + 3 * n_selected++;
        row[0] = b, row[1] = cl, row[2] = cand[k].box;
      }
    }
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, KILN_INT64, 2, (int64_t[]){n_selected, 3}, &y))) return s;
  if (n_selected) memcpy(y->data, selected, (size_t)n_selected * 3 * sizeof(int64_t));
  return NULL;
}

const kx_op kx_ops_detection[] = {
    {"", "NonMaxSuppression", 10, 0, nms_prepare, nms_run, NULL, 0},
    {0},
};
