#!/bin/sh
# demo.sh [BUILD_DIR]: kiln's main job on built-in defaults. Exports the seed's classifier
# (Flatten -> Dense(128, relu) -> Dense(10) on 28x28 images) with PyTorch, then inspects it, runs
# it on an input and benchmarks it at batch 1 and 64, runs one of ONNX's conformance suites, streams
# Fashion-MNIST through a data pipeline and checks its test set against the training set's schema,
# trains the same classifier on Fashion-MNIST with `kiln train` (the built-in run) and pushes it into a
# model repository (with a manifest), passes it through the validation gate and labels it stable,
# and finally serves both models with `kiln serve`: the PyTorch one's prediction checked against
# PyTorch's, the trained one's taken from raw pixels through its saved preprocessing.
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
fmnist=/usr/share/datasets/fashion-mnist
echo "== kiln data: Fashion-MNIST (Debian dataset-fashion-mnist) through normalize, shuffle, batch, prefetch" >&2
"$kiln" data cat "$fmnist/t10k-images-idx3-ubyte.gz" --limit 1 | cut -c 1-120
cat >"$work/pipeline.json" <<EOF
{"source": {"format": "idx", "path": "$fmnist/train-images-idx3-ubyte.gz"},
 "stages": [{"map": {"transforms": [{"normalize": {"feature": "image", "mean": 72.94, "std": 90.02}}]}},
            {"shuffle": {"buffer_size": 10000, "seed": 1}}, {"batch": 32}, {"prefetch": 2}]}
EOF
"$kiln" data bench --pipeline "$work/pipeline.json"
echo "== kiln data: the training set's schema, and the test set validated against it" >&2
"$kiln" data schema infer "$fmnist/train-images-idx3-ubyte.gz" -o "$work/schema.json"
"$kiln" data validate "$fmnist/t10k-images-idx3-ubyte.gz" --schema "$work/schema.json"
echo "== kiln train: the seed model on Fashion-MNIST (the built-in run: batch 32, Adam 1e-3, 10 epochs), exported" >&2
rm -rf "$work/repo" "$work/train"
mkdir -p "$work/train"
abs_work=$(cd "$work" && pwd)
abs_kiln=$(cd "$build" && pwd)/kiln
(cd "$work/train" && "$abs_kiln" train --export ../repo/fmnist --metrics-out metrics.json --log-every 1000)
echo "== kiln validate: the CI gate on the exported version (manifest, accuracy on the test set through its" >&2
echo "   preprocess.json, latency), then kiln registry labels it stable" >&2
"$kiln" validate "$work/repo/fmnist/1" --eval "$fmnist/t10k-images-idx3-ubyte.gz" --min-accuracy 0.85 \
  --max-latency-p99-ms 50 --report "$work/validate.json"
"$kiln" registry label fmnist 1 stable --repo "$work/repo"
"$kiln" registry push "$work/mlp.onnx" --name mlp --repo "$work/repo" >/dev/null
"$kiln" registry list --repo "$work/repo"
echo "== kiln serve: both models from one repository, one predict each over REST, then SIGTERM" >&2
printf 'model_config_list {\n  config { name: "mlp" base_path: "%s" }\n  config { name: "fmnist" base_path: "%s" }\n}\n' \
  "$abs_work/repo/mlp" "$abs_work/repo/fmnist" >"$work/models.config"
port=$(/usr/bin/python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$kiln" serve --model_config_file="$work/models.config" --rest_api_port="$port" --port=0 --host=127.0.0.1 \
  --rest_api_num_threads=1 2>"$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
/usr/bin/python3 - "$port" "$work" "$fmnist" <<'PY'
import gzip, json, sys, time, urllib.request
import numpy as np
port, work, fmnist = sys.argv[1], sys.argv[2], sys.argv[3]
base = "http://127.0.0.1:%s" % port
for _ in range(200):  # up to 10 s for the server to come up
    try:
        if urllib.request.urlopen(base + "/v2/health/ready", timeout=1).status == 200:
            break
    except OSError:
        time.sleep(0.05)
def predict(model, instances):
    req = urllib.request.Request(base + "/v1/models/%s:predict" % model, json.dumps({"instances": instances}).encode(),
                                 {"Content-Type": "application/json"})
    return np.array(json.load(urllib.request.urlopen(req, timeout=10))["predictions"], np.float32)
x = np.load(work + "/input.npy")
got, want = predict("mlp", x.tolist()), np.load(work + "/mlp.outputs.npz")["output"]
print("POST /v1/models/mlp:predict -> predictions %s, max |served - pytorch| = %.2e" % (got.shape, np.abs(got - want).max()))
assert np.allclose(got, want, rtol=1e-4, atol=1e-5)
images = np.frombuffer(gzip.open(fmnist + "/t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)[:100]
labels = np.frombuffer(gzip.open(fmnist + "/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[:100]
logits = predict("fmnist", images.tolist())  # raw 0-255 pixels: the server scales them as training did
accuracy = float(np.mean(logits.argmax(1) == labels))
print("POST /v1/models/fmnist:predict (raw pixels of 100 test images) -> accuracy %.2f" % accuracy)
assert accuracy > 0.8
PY
kill -TERM $server
wait $server
trap - EXIT
echo "== kiln serve drained and exited; its log is $work/serve.log" >&2
