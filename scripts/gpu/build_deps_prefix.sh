#!/usr/bin/env bash
# Builds the small dependency prefix a bare GPU machine (CUDA toolkit + PyTorch + CMake/ninja and
# nothing else) needs for the engine-only build: nlohmann-json, fmt and spdlog as header-only
# packages (headers from this machine's Debian packages, with minimal CMake package configs, so no
# compiled library has to match the other machine's compiler), and GoogleTest as sources
# (Debian's /usr/src/googletest) that run_on_gpu.sh compiles there with that machine's compiler.
# About 6 MB: it travels to the device as one of the paths the device tool carries.
#
# Usage: scripts/gpu/build_deps_prefix.sh PREFIX
# Needs (Debian): nlohmann-json3-dev libfmt-dev libspdlog-dev googletest.
set -euo pipefail
PREFIX=${1:?usage: build_deps_prefix.sh PREFIX}
INC=/usr/include
GTEST_SRC=${GTEST_SRC:-/usr/src/googletest}
for d in "$INC/nlohmann" "$INC/fmt" "$INC/spdlog" "$GTEST_SRC/CMakeLists.txt"; do
  [[ -e "$d" ]] || { echo "missing $d (apt-get install nlohmann-json3-dev libfmt-dev libspdlog-dev googletest)" >&2; exit 1; }
done
rm -rf "$PREFIX"
mkdir -p "$PREFIX/include" "$PREFIX/lib/cmake" "$PREFIX/src"
cp -r "$INC/nlohmann" "$INC/fmt" "$INC/spdlog" "$PREFIX/include/"
cp -r "$GTEST_SRC" "$PREFIX/src/googletest"

# One header-only package config: NAME TARGET DEFINITIONS LINKS
write_config() {
  local name=$1 target=$2 defs=$3 links=$4 dir="$PREFIX/lib/cmake/$1"
  mkdir -p "$dir"
  cat > "$dir/${name}Config.cmake" <<CFG
# Header-only $name for the statetune engine-only GPU build (scripts/gpu/build_deps_prefix.sh).
get_filename_component(_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET $target)
  add_library($target INTERFACE IMPORTED)
  set_target_properties($target PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "\${_prefix}/include"
    INTERFACE_COMPILE_DEFINITIONS "$defs"
    INTERFACE_LINK_LIBRARIES "$links")
endif()
set(${name}_FOUND TRUE)
CFG
}
write_config nlohmann_json nlohmann_json::nlohmann_json "" ""
write_config fmt fmt::fmt "FMT_HEADER_ONLY=1" ""
# spdlog's Debian headers set SPDLOG_FMT_EXTERNAL in tweakme.h; without SPDLOG_COMPILED_LIB they
# are header-only.
write_config spdlog spdlog::spdlog "SPDLOG_FMT_EXTERNAL" "fmt::fmt"
sed -i '1a include(CMakeFindDependencyMacro)\nfind_dependency(fmt)' "$PREFIX/lib/cmake/spdlog/spdlogConfig.cmake"
du -sh "$PREFIX"
