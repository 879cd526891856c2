# The two commands: `make run` and `make test`. Both install what is missing, then build Release.
# `make sanitize` runs the suite under the sanitizers (README, "Sanitizers"); it is not yet part of
# `make test`, whose time budget it does not fit.
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# A sanitizer tree builds only the executables of the tests it runs (target tandem_tests).
SANITIZE_CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_BENCH=OFF $(CMAKE_FLAGS)

.PHONY: all deps build run test sanitize asan tsan bench clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	bash scripts/quickstart.sh $(BUILD_DIR)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

sanitize: asan tsan

# The unit and net tests (not the slow ones) under AddressSanitizer + UBSan.
asan: deps
	cmake -S . -B $(ASAN_DIR) -DTANDEM_SANITIZE=address $(SANITIZE_CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS) --target tandem_tests
	cd $(ASAN_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

# The tests labelled tsan (transport, round engine, threads) under ThreadSanitizer.
tsan: deps
	cmake -S . -B $(TSAN_DIR) -DTANDEM_SANITIZE=thread $(SANITIZE_CMAKE_FLAGS)
	cmake --build $(TSAN_DIR) -j $(JOBS) --target tandem_tests
	cd $(TSAN_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

bench: build
	bash bench/train_vs_torch.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR)
