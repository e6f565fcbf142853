/* training kernels. */
#include "ops/op.h"

const kx_op kx_ops_training[] = {
    {0},
};
