#!/usr/bin/env bash
# Installs every Debian package statetune needs, then configures and builds it (idempotent).
# Usage: scripts/setup.sh [build-dir]     (default: build)
# Environment: STATETUNE_SKIP_APT=1 skips the package step (e.g. inside the Docker build's later
# stages); STATETUNE_JOBS overrides the build parallelism; STATETUNE_DEPS_ONLY=1 installs and stops
# (the Dockerfile's first stage); STATETUNE_NO_TEST_TOOLS=1 leaves out what only the tests need.
# The images' runtime stages install nothing: they get the libraries the binaries load from the build
# stage (scripts/collect-runtime-libs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  libspdlog-dev libfmt-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libsqlite3-dev jq libpqxx-dev libpq-dev libcpp-httplib-dev
)
if [[ "${STATETUNE_NO_TEST_TOOLS:-0}" != 1 ]]; then
  # Only the tests need these (tests/deploy): a real Prometheus (and curl to query it), kubectl for `kubectl kustomize`, npm for
  # the offline manifest validator. kubectl and npm may already be on the machine from elsewhere (a newer
  # kubectl, NodeSource's Node.js with its own npm); Debian's packages are added only where they are not.
  PACKAGES+=(prometheus curl openssl)  # openssl: tests/serving makes its TLS certificates with it
  # The shared-mode tests (label postgres) start a PostgreSQL 15 of their own with initdb/pg_ctl.
  PACKAGES+=(postgresql-15)
  # clang + its runtimes (libFuzzer, ASan, UBSan, TSan): scripts/fuzz.sh, which scripts/test.sh runs,
  # and scripts/sanitize.sh.
  PACKAGES+=(clang libclang-rt-14-dev)
  command -v kubectl >/dev/null || PACKAGES+=(kubernetes-client)
  command -v npm >/dev/null || PACKAGES+=(npm)
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

if [[ "${STATETUNE_DEPS_ONLY:-0}" == 1 ]]; then
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
