#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang under ASan + UBSan into their own build folder
# and runs each, one after another, for SECONDS on its checked-in corpus (ctest label "fuzz").
# Findings (crash-*, leak-*, timeout-*, oom-*) and each run's log land in
# <build-dir>/tests/fuzz/<target>/; new corpus inputs there too, never in tests/fuzz/corpus.
# Usage: scripts/fuzz.sh [SECONDS [TARGET-REGEX]]     (default: 10 seconds each, every target)
#   scripts/test.sh runs the default (seconds each). A long run, e.g. the figures in docs/benchmarks.md:
#   STATETUNE_FUZZ_FLAGS="-runs=10000000" scripts/fuzz.sh 86400 tokenizer
# Environment: STATETUNE_FUZZ_BUILD_DIR (default build-fuzz), STATETUNE_FUZZ_FLAGS (extra libFuzzer
# flags, e.g. -runs=N or -max_len=N), STATETUNE_JOBS (build parallelism).
# One fuzzing process at a time (no -jobs/-workers): CI machines and this one have 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10}
FILTER=${2:-}
BUILD_DIR=${STATETUNE_FUZZ_BUILD_DIR:-build-fuzz}
TARGETS=(safetensors_adapter_fuzz dataset_lines_fuzz tokenizer_fuzz tenants_fuzz job_params_fuzz)

command -v clang++ >/dev/null || { echo "fuzz: clang++ is missing (scripts/setup.sh installs it)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTATETUNE_SANITIZE=address,undefined -DSTATETUNE_FUZZ=ON -DSTATETUNE_CUDA=OFF \
  -DSTATETUNE_FUZZ_SECONDS="$SECONDS_EACH" >/dev/null
cmake --build "$BUILD_DIR" -j "${STATETUNE_JOBS:-$(nproc)}" --target "${TARGETS[@]}"
ctest --test-dir "$BUILD_DIR" -L '^fuzz$' ${FILTER:+-R "$FILTER"} --output-on-failure
