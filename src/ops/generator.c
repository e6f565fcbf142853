/* generator kernels. */
#include "ops/op.h"

const kx_op kx_ops_generator[] = {
    {0},
};
