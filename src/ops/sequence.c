/* sequence kernels. */
#include "ops/op.h"

const kx_op kx_ops_sequence[] = {
    {0},
};
