/* pool kernels. */
#include "ops/op.h"

const kx_op kx_ops_pool[] = {
    {0},
};
