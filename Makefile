# Thin wrapper around CMake. `make` builds, `make test` runs the whole suite (unit, conformance,
# integration, sanitizer build), `make demo` runs kiln's main job on built-in defaults.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)

.PHONY: all build test test-fast asan fuzz demo bench clean

all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# Everything CI runs: unit, conformance and integration tests on the Release build, the unit and
# conformance tests again under ASan+UBSan, and each fuzz target for a bounded time on its
# committed corpus.
test: build asan fuzz
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L 'unit|conformance'
	cd $(FUZZ_BUILD) && ctest --output-on-failure -j $(JOBS) -L fuzz

# Unit tests only, in the Release build
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

fuzz:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)

# kiln against its peers in one run each: GEMM against OpenBLAS, whole models against ONNX Runtime,
# the model server against Node.js + ONNX Runtime and Flask + PyTorch servers, the data pipeline
# against NumPy, pandas and raw reads, training against PyTorch (with thread, MPI and precision rows)
# and kiln serve's gRPC API against its own REST API (bench/serve/grpc.py, h2load for both)
bench: build
	$(BUILD)/bench/kiln_gemm_bench
	/usr/bin/python3 bench/runtime/run.py --kiln $(BUILD)/kiln
	/usr/bin/python3 bench/serve/run.py --kiln $(BUILD)/kiln
	/usr/bin/python3 bench/serve/grpc.py --kiln $(BUILD)/kiln
	/usr/bin/python3 bench/data/run.py --kiln $(BUILD)/kiln
	/usr/bin/python3 bench/train/run.py --kiln $(BUILD)/kiln

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
