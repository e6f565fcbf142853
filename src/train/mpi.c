/* Data-parallel training across processes with OpenMPI: joining the job when mpirun launched this
 * process, the one all-reduce per step, and the checks that every rank runs the same kiln and the
 * same run. A process not launched by mpirun never calls MPI_Init (which would cost a singleton
 * runtime's start-up) and works as a world of one. */
#include "train/train.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenMPI's launcher sets these in every process it starts (PMIx for direct launches). */
static int launched_by_mpirun(void) { return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK"); }

kiln_status kx_world_init(kx_world *w) {
  memset(w, 0, sizeof *w);
  w->size = 1;
  if (!launched_by_mpirun()) return NULL;
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready && MPI_Init(NULL, NULL) != MPI_SUCCESS) return kiln_error(KILN_UNAVAILABLE, "MPI_Init failed");
  w->owns_mpi = !ready;
  MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w->size);
  return NULL;
}

void kx_world_finalize(kx_world *w) {
  if (w->owns_mpi) MPI_Finalize();
  w->owns_mpi = 0;
}

void kx_world_sum_floats(const kx_world *w, float *data, int64_t n) {
  if (w->size > 1) MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

void kx_world_sum_doubles(const kx_world *w, double *data, int n) {
  if (w->size > 1) MPI_Allreduce(MPI_IN_PLACE, data, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void kx_world_broadcast(const kx_world *w, void *data, size_t bytes) {
  if (w->size > 1) MPI_Bcast(data, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
}

kiln_status kx_world_check_same(const kx_world *w, const char *what, const char *value) {
  if (w->size <= 1) return NULL;
  char mine[256] = "", root[256] = "";
  snprintf(mine, sizeof mine, "%s", value);
  memcpy(root, mine, sizeof root);
  MPI_Bcast(root, sizeof root, MPI_CHAR, 0, MPI_COMM_WORLD);
  int differs = strcmp(root, mine) != 0, any = 0;
  MPI_Allreduce(&differs, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (differs)
    return kiln_error(KILN_FAILED_PRECONDITION, "rank %d runs %s %s but rank 0 runs %s: every rank must run the same", w->rank,
                      what, mine, root);
  if (any) return kiln_error(KILN_FAILED_PRECONDITION, "another rank's %s differs from rank 0's (see its error)", what);
  return NULL;
}

void kx_world_library(char *buf, size_t size) {
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(version, &len) != MPI_SUCCESS) len = 0;
  version[len < MPI_MAX_LIBRARY_VERSION_STRING ? len : MPI_MAX_LIBRARY_VERSION_STRING - 1] = 0;
  char *comma = strchr(version, ','); /* "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4" */
  if (comma) *comma = 0;
  snprintf(buf, size, "%s", version);
}
