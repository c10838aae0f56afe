#!/usr/bin/env bash
# Builds the engine against the CUDA LibTorch of this machine's Python PyTorch and runs the kernel
# tests on the GPU (ctest -L 'kernels|cuda'): kernels_cuda_test (raw launchers: forward vs the
# reference, backward vs the CPU backward), kernels_cuda_torch_test (the at::Tensor path through
# dispatch, forward and backward), the emulated and CPU suites.
#
# Usage: scripts/gpu/run_kernel_tests_on_gpu.sh [build-dir]     (default: build-gpu)
# Env:   PYTHON (default python3), STATETUNE_JOBS (default nproc), CUDA_ARCH (default: the GPU's).
# Needs: a PyTorch with CUDA in $PYTHON, nvcc (CUDA toolkit), cmake >= 3.25, a C++17 compiler, and
#        the packages the top-level CMakeLists finds (Debian: libgtest-dev nlohmann-json3-dev
#        libspdlog-dev libfmt-dev; scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build-gpu}
PYTHON=${PYTHON:-python3}
JOBS=${STATETUNE_JOBS:-$(nproc)}

TORCH_DIR=$("$PYTHON" -c 'import torch,os;print(os.path.dirname(torch.__file__))')
TORCH_CMAKE="$TORCH_DIR/share/cmake/Torch"
[[ -d "$TORCH_CMAKE" ]] || { echo "no LibTorch CMake config at $TORCH_CMAKE" >&2; exit 1; }
"$PYTHON" - <<'PY'
import torch, sys
if not torch.cuda.is_available() or torch.version.cuda is None:
    sys.exit(f"PyTorch {torch.__version__} has no usable CUDA (cuda={torch.version.cuda})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {torch.cuda.get_device_name(0)}")
if not torch.compiled_with_cxx11_abi():
    print("warning: this LibTorch uses the pre-C++11 ABI; linking against system gtest/spdlog/fmt "
          "(C++11 ABI) may fail. Use a PyTorch >= 2.7 wheel or a cxx11-abi LibTorch.", file=sys.stderr)
PY
if [[ -z "${CUDA_ARCH:-}" ]]; then
  CUDA_ARCH=$("$PYTHON" -c 'import torch;m,n=torch.cuda.get_device_capability(0);print(f"{m}{n}")')
fi
NVCC=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$NVCC" ]] || { echo "nvcc not found (set CUDACXX)" >&2; exit 1; }

mkdir -p "$BUILD_DIR"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S . -B "$BUILD_DIR" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTATETUNE_ENGINE_ONLY=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" \
  -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" | tee "$BUILD_DIR/configure.log"
grep -q "torch-cuda=ON" "$BUILD_DIR/configure.log" || {
  echo "configure did not find a CUDA LibTorch (statetune: torch-cuda=OFF)" >&2; exit 1; }
cmake --build "$BUILD_DIR" -j "$JOBS"
cd "$BUILD_DIR"
ctest -L 'kernels|cuda' --output-on-failure --timeout 900
