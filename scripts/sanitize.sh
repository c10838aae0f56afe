#!/usr/bin/env bash
# The test suite under sanitizers, built with clang into a build folder of its own:
#   scripts/sanitize.sh                      ASan + UBSan (build-asan), every test
#   scripts/sanitize.sh thread -R 'sched'    TSan (build-tsan), only the tests ctest -R picks
# Arguments after the sanitizer go to ctest. Any sanitizer report fails its test (halt_on_error).
# LibTorch, gRPC and protobuf are Debian's uninstrumented builds: ASan still sees every heap access of
# our code (it replaces malloc), but TSan cannot see their locks, so a TSan report whose stack is all
# inside them is not evidence of a race in ours (see docs/benchmarks.md, "Sanitizers").
# Environment: STATETUNE_SANITIZE_TARGETS limits what is built (default: everything), STATETUNE_JOBS
# the build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
SAN=${1:-address,undefined}
shift || true
case "$SAN" in
  thread) BUILD_DIR=${STATETUNE_SANITIZE_BUILD_DIR:-build-tsan} ;;
  *) BUILD_DIR=${STATETUNE_SANITIZE_BUILD_DIR:-build-asan} ;;
esac
command -v clang++ >/dev/null || { echo "sanitize: clang++ is missing (scripts/setup.sh installs it)" >&2; exit 1; }

start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTATETUNE_SANITIZE="$SAN" -DSTATETUNE_CUDA=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j "${STATETUNE_JOBS:-$(nproc)}" ${STATETUNE_SANITIZE_TARGETS:+--target $STATETUNE_SANITIZE_TARGETS}
built=$(date +%s)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/support/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
status=0
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 1800 -j "${STATETUNE_TEST_JOBS:-2}" "$@") || status=$?
echo "sanitize ($SAN): build $((built - start)) s, tests $(( $(date +%s) - built )) s, status $status"
exit $status
