#!/usr/bin/env bash
# See CMakeLists.txt. Usage: check_without_gpu.sh WORKDIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:?usage: check_without_gpu.sh WORKDIR}
rm -rf "$WORK"
mkdir -p "$WORK"
DEPS=$WORK/deps

"$ROOT/scripts/gpu/build_deps_prefix.sh" "$DEPS"

# What travels: the working tree (tracked files) plus the prefix, under the device tool's 64 MiB.
tree_bytes=$(cd "$ROOT" && git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
deps_bytes=$(du -sb "$DEPS" | cut -f1)
total=$((tree_bytes + deps_bytes))
echo "carry: tree $tree_bytes + prefix $deps_bytes = $total bytes (limit $((64 * 1024 * 1024)))"
[[ $total -lt $((64 * 1024 * 1024)) ]] || { echo "carry exceeds 64 MiB" >&2; exit 1; }

# The device script's deps and configure stages, against this machine's CPU LibTorch (the CUDA
# toolkit is configured when nvcc is here; torch-cuda stays OFF).
OUT=$WORK/out
STATETUNE_GPU_STAGES="deps configure" STATETUNE_GPU_DEPS=$DEPS STATETUNE_GPU_BUILD=$WORK/build \
  STATETUNE_GPU_GTEST_BUILD=$WORK/gtest-build STATETUNE_GPU_JOBS=2 STATETUNE_GPU_ALLOW_CPU_TORCH=1 STATETUNE_GPU_TIMEOUT_SCALE=4 \
  TORCH_PREFIX=/usr PYTHON=false "$ROOT/scripts/gpu/run_on_gpu.sh" "$OUT" ||
  { cat "$OUT"/*.log; exit 1; }
cat "$OUT/summary.txt"
# Every package came from the prefix, not from this machine's system packages.
for pkg in spdlog fmt nlohmann_json GTest; do
  dir=$(grep -E "^${pkg}_DIR" "$WORK/build/CMakeCache.txt" | cut -d= -f2)
  [[ "$dir" == "$DEPS"* || "$dir" == "$WORK/build/_gtest-install"* ]] ||
    { echo "$pkg was found at $dir, not in the prefix" >&2; exit 1; }
done

# A consumer compiles and links against the header-only packages and the built GoogleTest.
mkdir -p "$WORK/consumer"
cat > "$WORK/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(prefix_consumer CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(nlohmann_json REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(GTest REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE spdlog::spdlog fmt::fmt nlohmann_json::nlohmann_json GTest::gtest GTest::gtest_main)
CM
cat > "$WORK/consumer/main.cpp" <<'CPP'
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
TEST(Prefix, EveryPackageWorks) {
  spdlog::info("spdlog {} from the prefix", SPDLOG_VER_MAJOR);
  EXPECT_EQ(fmt::format("{}-{}", 1, "a"), "1-a");
  EXPECT_EQ(nlohmann::json::parse(R"({"k": 2})")["k"].get<int>(), 2);
}
CPP
cmake -S "$WORK/consumer" -B "$WORK/consumer/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$DEPS;$WORK/build/_gtest-install" -DCMAKE_FIND_PACKAGE_PREFER_CONFIG=ON > "$WORK/consumer.log"
grep -E "^(spdlog|fmt|nlohmann_json)_DIR" "$WORK/consumer/build/CMakeCache.txt" | grep -v "$DEPS" &&
  { echo "consumer found a system package" >&2; exit 1; }
cmake --build "$WORK/consumer/build" -j 2 >> "$WORK/consumer.log"
"$WORK/consumer/build/consumer"
echo "gpu script stages without a GPU: ok"
