#!/bin/sh
# deps.sh: install every Debian package kiln's build, tests and benchmarks need.
# Idempotent: apt-get skips what is already installed. Uses sudo when not root.
set -eu

# libopenblas-dev is bench/gemm's peer (libkiln does not link it); python3-onnx/-torch write the
# reference models and outputs; nodejs runs the ONNX Runtime peer of bench/runtime and bench/serve;
# wrk and python3-flask are bench/serve's load generator and Flask peer; python3-prometheus-client
# parses the server's /metrics in the integration tests; python3-pandas and python3-pil write the data
# tests' reference files and are bench/data's peers; OpenMPI runs kiln train's data-parallel jobs
# (libkiln links it; mpirun starts them); python3-protobuf decodes TensorBoard files in a test; nettle
# hashes the registry's manifests (SHA-256) and compares admin tokens in constant time; libcurl sends
# OTLP traces; promtool (Debian's prometheus) tests the alert rules; nginx-light and python3-yaml run
# and check the deployment files in deploy/. gRPC: libnghttp2 is the server's HTTP/2; libprotobuf-dev
# has google/protobuf/any.proto and wrappers.proto, which the TF Serving .proto files import;
# protobuf-compiler (protoc) and python3-grpc-tools write the Python stubs the gRPC tests use, and
# python3-grpcio is their client; nghttp2-client's h2load is bench/serve/grpc.py's load generator
# for both gRPC (h2c) and REST (--h1).
packages="
  build-essential cmake pkg-config git ca-certificates
  clang libclang-rt-14-dev
  libprotobuf-c-dev protobuf-c-compiler
  libprotobuf-dev protobuf-compiler python3-grpcio python3-grpc-tools
  libhttp-parser-dev libcjson-dev libjemalloc-dev libnghttp2-dev
  zlib1g-dev libzip-dev libisal-dev libspng-dev libturbojpeg0-dev dataset-fashion-mnist
  libopenmpi-dev openmpi-bin python3-protobuf nettle-dev libcurl4-openssl-dev
  prometheus nginx-light python3-yaml
  libonnx-dev libonnx-testdata
  libopenblas-dev
  python3 python3-numpy python3-onnx python3-torch python3-pandas python3-pil
  nodejs wrk python3-flask python3-prometheus-client nghttp2-client
"

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi

missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm ships inside some nodejs builds (NodeSource's conflicts with Debian's npm package)
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -z "$missing" ]; then
  echo "deps: all packages present" >&2
  exit 0
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done" >&2
