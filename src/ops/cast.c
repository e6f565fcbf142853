/* cast kernels. */
#include "ops/op.h"

const kx_op kx_ops_cast[] = {
    {0},
};
