#!/usr/bin/env bash
# Installs every Debian package statetune needs, then configures and builds it (idempotent).
# Usage: scripts/setup.sh [build-dir]     (default: build)
# Environment: STATETUNE_SKIP_APT=1 skips the package step (e.g. inside the Docker build's later
# stages); STATETUNE_JOBS overrides the build parallelism; STATETUNE_DEPS_ONLY=1 installs and stops
# (the Dockerfile's first stage); STATETUNE_NO_TEST_TOOLS=1 leaves out what only the tests need;
# STATETUNE_RUNTIME_ONLY=1 installs only the shared libraries the binaries load, and stops (the
# images' runtime stages), with STATETUNE_NO_DEBIAN_TORCH=1 also without Debian's CPU LibTorch (the
# cuda image brings its own) and STATETUNE_PRUNE_RUNTIME=1 purging the packages nothing loads.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  libspdlog-dev libfmt-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libsqlite3-dev jq libcpp-httplib-dev
)
# What the four binaries load at run time (their NEEDED libraries' packages; apt adds the rest).
RUNTIME_PACKAGES=(
  libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libspdlog1.10 libfmt9
  libprometheus-cpp-core1.0 libsqlite3-0 libcpp-httplib0.11
)
[[ "${STATETUNE_NO_DEBIAN_TORCH:-0}" == 1 ]] || RUNTIME_PACKAGES+=(libtorch1.13 libopenblas0-pthread)
if [[ "${STATETUNE_RUNTIME_ONLY:-0}" == 1 ]]; then
  PACKAGES=("${RUNTIME_PACKAGES[@]}")
elif [[ "${STATETUNE_NO_TEST_TOOLS:-0}" != 1 ]]; then
  # Only the tests need these (tests/deploy): a real Prometheus (and curl to query it), kubectl for `kubectl kustomize`, npm for
  # the offline manifest validator. kubectl and npm may already be on the machine from elsewhere (a newer
  # kubectl, NodeSource's Node.js with its own npm); Debian's packages are added only where they are not.
  PACKAGES+=(prometheus curl openssl)  # openssl: tests/serving makes its TLS certificates with it
  # clang + its runtimes (libFuzzer, ASan, UBSan, TSan): scripts/fuzz.sh, which scripts/test.sh runs,
  # and scripts/sanitize.sh.
  PACKAGES+=(clang libclang-rt-14-dev)
  command -v kubectl >/dev/null || PACKAGES+=(kubernetes-client)
  command -v npm >/dev/null || PACKAGES+=(npm)
fi

if [[ "${STATETUNE_RUNTIME_ONLY:-0}" == 1 && "${STATETUNE_PRUNE_RUNTIME:-0}" == 1 ]]; then
  dpkg-query -W -f='${Package}\n' >/tmp/statetune-packages-before
fi

if [[ "${STATETUNE_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# LibTorch must use OpenBLAS, not the reference BLAS (13x slower matmuls on this class of machine).
if command -v update-alternatives >/dev/null; then
  for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -n1 || true)
    [[ -n "$target" ]] && update-alternatives --set "$alt" "$target" >/dev/null 2>&1 || true
  done
fi

# Runtime images: drop what apt pulled in but nothing loads (see the script).
if [[ "${STATETUNE_RUNTIME_ONLY:-0}" == 1 && "${STATETUNE_PRUNE_RUNTIME:-0}" == 1 ]]; then
  scripts/prune-runtime-packages.sh /tmp/statetune-packages-before "${RUNTIME_PACKAGES[@]}"
  rm -f /tmp/statetune-packages-before
fi

if [[ "${STATETUNE_DEPS_ONLY:-0}" == 1 || "${STATETUNE_RUNTIME_ONLY:-0}" == 1 ]]; then
  exit 0
fi

# The npm packages the tests use, each pinned by its package-lock.json and installed into the project:
# the manifest validator (tools/deploy-check) and the official OpenAI SDK that drives the HTTP API
# (tools/openai-check, tests/http); reinstalled only when a lock file changed.
if [[ "${STATETUNE_NO_TEST_TOOLS:-0}" != 1 ]]; then
  for tool in tools/deploy-check tools/openai-check; do
    if [[ ! $tool/node_modules/.package-lock.json -nt $tool/package-lock.json ]]; then
      npm ci --prefix $tool --no-audit --no-fund --loglevel=error
    fi
  done
fi

JOBS=${STATETUNE_JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${STATETUNE_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "setup: built into $BUILD_DIR"
