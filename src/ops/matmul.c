/* matmul kernels. */
#include "ops/op.h"

const kx_op kx_ops_matmul[] = {
    {0},
};
