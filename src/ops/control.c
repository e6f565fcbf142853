/* control kernels. */
#include "ops/op.h"

const kx_op kx_ops_control[] = {
    {0},
};
