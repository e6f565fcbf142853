# Thin wrapper around CMake. `make` builds, `make test` runs the whole suite (unit, conformance,
# integration, sanitizer build), `make demo` runs kiln's main job on built-in defaults.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)

.PHONY: all build test test-fast asan demo bench fuzz clean format

all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

test: build asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

# Unit tests only, in the Release build
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)

bench: build
	/usr/bin/python3 bench/runtime/run.py --kiln $(BUILD)/kiln

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
