#!/usr/bin/env bash
# Builds (if needed) and runs the whole test suite through ctest.
# Usage: scripts/test.sh [build-dir] [extra ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}; shift || true
cmake --build "$BUILD_DIR" -j "${STATETUNE_JOBS:-$(nproc)}"
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j "${STATETUNE_TEST_JOBS:-2}" "$@"
