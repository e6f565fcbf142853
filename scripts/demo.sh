#!/bin/sh
# demo.sh [BUILD_DIR]: kiln's main job on built-in defaults. Exports the seed's classifier
# (Flatten -> Dense(128, relu) -> Dense(10) on 28x28 images) with PyTorch, then inspects it, runs
# it on an input and benchmarks it at batch 1 and 64; finally runs one of ONNX's conformance suites.
set -eu
build=${1:-build}
kiln=$build/kiln
work=$build/demo
mkdir -p "$work"

echo "== exporting the seed model with PyTorch -> $work/mlp.onnx" >&2
/usr/bin/python3 bench/runtime/models.py "$work" mlp 2>/dev/null
/usr/bin/python3 -c "import numpy as np; np.save('$work/input.npy', np.load('$work/mlp.inputs.npz')['input'])"

echo "== kiln info" >&2
"$kiln" info "$work/mlp.onnx"
echo "== kiln run (outputs checked against PyTorch's)" >&2
"$kiln" run "$work/mlp.onnx" --input "input=$work/input.npy" --output "$work"
/usr/bin/python3 -c "
import numpy as np
got, want = np.load('$work/output.npy'), np.load('$work/mlp.outputs.npz')['output']
print('max |kiln - pytorch| = %.2e' % np.abs(got - want).max())
assert np.allclose(got, want, rtol=1e-4, atol=1e-5)"
echo "== kiln bench, batch 1 and 64" >&2
"$kiln" bench "$work/mlp.onnx" --batch 1 --iters 2000
"$kiln" bench "$work/mlp.onnx" --batch 64 --iters 500
echo "== kiln conformance on ONNX's pytorch-converted suite" >&2
"$kiln" conformance /usr/include/onnx/backend/test/data/pytorch-converted | tail -n 1
