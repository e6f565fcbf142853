/* conv kernels. */
#include "ops/op.h"

const kx_op kx_ops_conv[] = {
    {0},
};
