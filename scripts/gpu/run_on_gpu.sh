#!/usr/bin/env bash
# The whole GPU check in one run, for a bare machine with a CUDA toolkit (nvcc, compute-sanitizer),
# a CUDA PyTorch (its LibTorch is used) and CMake/ninja, and nothing else. Every stage runs under
# its own `timeout`, writes its log under OUT and one line to OUT/summary.txt; a failing stage is
# recorded and the run goes on (the exit status says whether any stage failed).
#
# Stages (STATETUNE_GPU_STAGES, default all, in this order):
#   env        nvidia-smi, nvcc, torch versions
#   deps       GoogleTest from the carried prefix's sources, built with this machine's compiler
#   configure  engine-only build against the PyTorch LibTorch, sm_90 + -lineinfo
#   build      only the CUDA test targets and statetune-engine (-j16)
#   test       kernels_cuda_test, kernels_cuda_torch_test (CUDA_LAUNCH_BLOCKING=1), model_cuda_test
#              (the model on the device vs the CPU model; decode replayed as CUDA graphs vs direct)
#   sanitize   compute-sanitizer memcheck / racecheck / synccheck / initcheck on focused filters
#   bench      statetune-engine bench --device cuda at batch 1, 16, 64 (decode direct vs CUDA graphs too)
#   parity     logits of the CUDA engine vs the CPU engine vs transformers' MambaForCausalLM
#
# Usage (repository root): scripts/gpu/run_on_gpu.sh [OUT]        (default: $OUT or gpu-out)
# Before: scripts/gpu/build_deps_prefix.sh .gpu-deps (on the build machine; carry .gpu-deps).
# Env: STATETUNE_GPU_DEPS (.gpu-deps), STATETUNE_GPU_BUILD (build-gpu), PYTHON (python3),
#      TORCH_PREFIX (default: torch.utils.cmake_prefix_path), STATETUNE_GPU_JOBS (16),
#      STATETUNE_GPU_ALLOW_CPU_TORCH=1 (configure against a CPU LibTorch: the local/CI check),
#      STATETUNE_GPU_TIMEOUT_SCALE (1: multiplies every stage limit, for slower machines).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEPS=$(cd "${STATETUNE_GPU_DEPS:-.gpu-deps}" 2>/dev/null && pwd || echo "${STATETUNE_GPU_DEPS:-.gpu-deps}")
BUILD=${STATETUNE_GPU_BUILD:-build-gpu}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
GTEST_BUILD=${STATETUNE_GPU_GTEST_BUILD:-$BUILD/_gtest}
GTEST_PREFIX=$BUILD/_gtest-install
PY=${PYTHON:-python3}
JOBS=${STATETUNE_GPU_JOBS:-16}
STAGES=${STATETUNE_GPU_STAGES:-env deps configure build test sanitize bench parity}
NVCC=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
SANITIZER=$(command -v compute-sanitizer || ls "$(dirname "$NVCC")/compute-sanitizer" 2>/dev/null || true)
ENGINE=$BUILD/server/engine/tools/statetune-engine
KTEST=$BUILD/tests/kernels_cuda/kernels_cuda_test
TTEST=$BUILD/tests/kernels_cuda/kernels_cuda_torch_test
MTEST=$BUILD/tests/model/model_cuda_test
# Stage time limits are sized for the 16-core GPU machine; a slower machine (the CI check) scales them.
SCALE=${STATETUNE_GPU_TIMEOUT_SCALE:-1}
LAUNCHER=""
command -v ccache > /dev/null && LAUNCHER="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
FAILED=0
: > "$OUT/summary.txt"

want() { [[ " $STAGES " == *" $1 "* ]]; }
# step NAME SECONDS CMD...: runs CMD under timeout into OUT/NAME.log and records the outcome.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  limit=$(( limit * SCALE ))
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local verdict=ok
  [[ $rc -eq 0 ]] || { verdict="FAILED rc=$rc"; [[ $rc -eq 124 ]] && verdict="TIMED OUT after ${limit}s"; FAILED=1; }
  printf '%-28s %-24s %4ss\n' "$name" "$verdict" "$(( $(date +%s) - start ))" | tee -a "$OUT/summary.txt"
  return $rc
}

if want env; then
  step env 60 bash -c "nvidia-smi; '$NVCC' --version; cmake --version | head -1; ninja --version;
    '$PY' -c 'import torch;print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"available\", torch.cuda.is_available(), \"cxx11abi\", torch.compiled_with_cxx11_abi())';
    echo sanitizer: ${SANITIZER:-none}"
fi

if want deps; then
  step deps-gtest 180 bash -c "
    cmake -S '$DEPS/src/googletest' -B '$GTEST_BUILD' -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_INSTALL_PREFIX='$GTEST_PREFIX' $LAUNCHER &&
    cmake --build '$GTEST_BUILD' -j '$JOBS' && cmake --install '$GTEST_BUILD'"
fi

if want configure; then
  TORCH_PREFIX=${TORCH_PREFIX:-$("$PY" -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null)}
  step configure 240 bash -c "
    cmake -S . -B '$BUILD' -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTATETUNE_ENGINE_ONLY=ON \
      -DCMAKE_PREFIX_PATH='$DEPS;$GTEST_PREFIX;$TORCH_PREFIX' -DCMAKE_FIND_PACKAGE_PREFER_CONFIG=ON \
      -DCMAKE_CUDA_COMPILER='$NVCC' -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS=-lineinfo &&
    grep -E '^(spdlog|fmt|nlohmann_json|GTest)_DIR' '$BUILD/CMakeCache.txt' &&
    { grep -q 'torch-cuda=ON' '$OUT/configure.log' || [[ '${STATETUNE_GPU_ALLOW_CPU_TORCH:-0}' == 1 ]] ||
      { echo 'configure did not find a CUDA LibTorch (statetune: torch-cuda=OFF)'; exit 1; }; }"
fi

if want build; then
  step build 480 cmake --build "$BUILD" -j "$JOBS" --target kernels_cuda_test kernels_cuda_torch_test model_cuda_test statetune-engine
fi

if want test; then
  step test-kernels 300 env CUDA_LAUNCH_BLOCKING=1 "$KTEST" --gtest_brief=0
  step test-torch-glue 180 env CUDA_LAUNCH_BLOCKING=1 "$TTEST"
  # Not under CUDA_LAUNCH_BLOCKING: graph capture is what it checks, and blocking launches are not
  # what serving runs.
  step test-model-cuda 180 "$MTEST"
fi

if want sanitize; then
  if [[ -z "$SANITIZER" ]]; then
    echo "compute-sanitizer not found: sanitize stage skipped" | tee -a "$OUT/summary.txt"
  else
    # Small shapes under the tools (they slow kernels 10-100x); the multi-warp shapes for racecheck
    # and synccheck, where shared memory and __syncthreads are.
    FAST='KernelsCuda.ScanPrefillCoversEveryStateSize:KernelsCuda.ScanBackwardCoversEveryStateSize:KernelsCuda.ConvPrefillMatchesReference:KernelsCuda.ConvStepMatchesReference:KernelsCuda.ConvBackwardMatchesCpuBackward:KernelsCuda.OutOfRangeRowsAndSlotsTouchNothing:KernelsCuda.ScanBackwardWarpSumsKeepRowsApart:KernelsCuda.RmsNormMatchesReference'
    # The kernels with shared memory and __syncthreads (scan prefill, RMSNorm), at multi-warp shapes.
    SHARED='KernelsCuda.ScanPrefillCoversEveryStateSize:KernelsCuda.LargeShapeScanMatchesReference:KernelsCuda.RmsNormMatchesReference'
    step sanitize-memcheck 150 "$SANITIZER" --tool memcheck --error-exitcode 9 "$KTEST" --gtest_filter="$FAST"
    step sanitize-initcheck 120 "$SANITIZER" --tool initcheck --error-exitcode 9 "$KTEST" --gtest_filter="$FAST"
    step sanitize-racecheck 150 "$SANITIZER" --tool racecheck --error-exitcode 9 "$KTEST" --gtest_filter="$SHARED"
    step sanitize-synccheck 120 "$SANITIZER" --tool synccheck --error-exitcode 9 "$KTEST" --gtest_filter="$SHARED"
    step sanitize-memcheck-torch 150 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      "$SANITIZER" --tool memcheck --error-exitcode 9 "$TTEST"
  fi
fi

if want bench; then
  # The default 130M-class shape (random weights: speed does not depend on the values), bf16:
  # prefill, decode with mixed adapters vs none, a training step vs its forward, and the scheduler's
  # decode step direct vs replayed as CUDA graphs (--decode-path-rounds).
  for b in 1 16 64; do
    step "bench-batch$b" 150 "$ENGINE" bench --device cuda --dtype bf16 --batch "$b" --prompt-len 512 \
      --decode-steps 64 --rounds 3 --train-rounds 2 --decode-path-rounds 3 --json "$OUT/bench-batch$b.json"
  done
fi

if want parity; then
  step parity 240 "$PY" scripts/gpu/parity_transformers.py --engine "$ENGINE" --out "$OUT/parity"
fi

echo "logs: $OUT" | tee -a "$OUT/summary.txt"
exit $FAILED
