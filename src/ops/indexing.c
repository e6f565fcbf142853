/* indexing kernels. */
#include "ops/op.h"

const kx_op kx_ops_indexing[] = {
    {0},
};
