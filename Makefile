# The two commands: `make run` and `make test`. Both install what is missing, then build Release.
#
# `make test` runs the whole suite once, each test in the tree that checks it (README, "Sanitizers"):
#   build/       Release (gcc): builds everything; runs the slow and RELEASE_ONLY tests
#   build-asan/  clang, AddressSanitizer + UBSan: the unit and net tests
#   build-tsan/  clang, ThreadSanitizer: the tests labelled tsan (transport, engine, threads)
# It runs the three suites even when one fails, and fails if a build, a test or a sanitizer report
# (every report is fatal) failed. `make asan`, `make tsan` and `make sanitize` build and run the
# sanitizer trees alone, `make release-test` the Release part; with RELEASE_TESTS=all the Release
# tree registers and runs every test as well.
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
RELEASE_TESTS ?= unsanitized
# The sanitizer trees compile with clang (20-35% less CPU than gcc on these translation units);
# Release keeps gcc, whose bits scripts/bits.sha256 pins.
SANITIZE_CXX ?= clang++
# A sanitizer tree builds only the executables of the tests it runs (target tandem_tests).
SANITIZE_CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_BENCH=OFF \
  -DCMAKE_CXX_COMPILER=$(SANITIZE_CXX) $(CMAKE_FLAGS)
CTEST = ctest --output-on-failure -j $(JOBS) --timeout 600

.PHONY: all deps build run test release-test sanitize asan tsan asan-build tsan-build bench clean

all: build

deps:
	@bash scripts/install-deps.sh

# Configured on every call (a few seconds), so a tree made before TANDEM_RELEASE_TESTS follows it.
build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DTANDEM_RELEASE_TESTS=$(RELEASE_TESTS) $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	bash scripts/quickstart.sh $(BUILD_DIR)

# The ASan tests leave about half of the two cores idle (sockets, timeouts), so the TSan tree
# builds meanwhile at the lowest priority, its output kept in $(TSAN_DIR)/make-test-build.log.
test: build asan-build
	@failed=""; \
	echo "== Release tests ($(BUILD_DIR)): slow and RELEASE_ONLY"; \
	$(CTEST) --test-dir $(BUILD_DIR) || failed="$$failed $(BUILD_DIR)"; \
	echo "== ThreadSanitizer tree ($(TSAN_DIR)) builds while the AddressSanitizer + UBSan tests run"; \
	mkdir -p $(TSAN_DIR); \
	nice -n 19 $(MAKE) --no-print-directory tsan-build > $(TSAN_DIR)/make-test-build.log 2>&1 & \
	tsan_build=$$!; \
	echo "== AddressSanitizer + UBSan tests ($(ASAN_DIR))"; \
	$(CTEST) --test-dir $(ASAN_DIR) || failed="$$failed $(ASAN_DIR)"; \
	if wait $$tsan_build; then \
	  echo "== ThreadSanitizer tests ($(TSAN_DIR))"; \
	  $(CTEST) --test-dir $(TSAN_DIR) || failed="$$failed $(TSAN_DIR)"; \
	else \
	  cat $(TSAN_DIR)/make-test-build.log; failed="$$failed $(TSAN_DIR)(build)"; \
	fi; \
	if [ -n "$$failed" ]; then echo "make test: FAILED in$$failed"; exit 1; fi; \
	echo "make test: every test passed in $(BUILD_DIR), $(ASAN_DIR) and $(TSAN_DIR)"

release-test: build
	$(CTEST) --test-dir $(BUILD_DIR)

sanitize: asan tsan

# The unit and net tests (not the slow ones) under AddressSanitizer + UBSan.
asan-build: deps
	cmake -S . -B $(ASAN_DIR) -DTANDEM_SANITIZE=address $(SANITIZE_CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS) --target tandem_tests

asan: asan-build
	$(CTEST) --test-dir $(ASAN_DIR)

# The tests labelled tsan (transport, round engine, threads) under ThreadSanitizer.
tsan-build: deps
	cmake -S . -B $(TSAN_DIR) -DTANDEM_SANITIZE=thread $(SANITIZE_CMAKE_FLAGS)
	cmake --build $(TSAN_DIR) -j $(JOBS) --target tandem_tests

tsan: tsan-build
	$(CTEST) --test-dir $(TSAN_DIR)

bench: build
	bash bench/train_vs_torch.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR)
