// The emulator's warp shuffles (cuda_emu.h) against the CUDA programming guide's description, and
// the kernels' warp reduction (device_utils.cuh) on top of them: the emulated kernel tests can only
// be as right as these. Built into kernels_cuda_emulated_test only (the kernels here are host
// functions that the force-included emulator runs as fibers).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cuda/device_utils.cuh"

namespace {

constexpr unsigned kAll = 0xffffffffu;
constexpr int kOps = 5;  // idx, up, down, xor on int; xor on double

int Lane() { return static_cast<int>(threadIdx.x % 32); }

// Every thread of the block records what each kind of shuffle returns for it.
void ShuffleKernel(int* out, int width) {
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = Lane();
  const int v = 100 * tid;
  int* o = out + tid * kOps;
  o[0] = __shfl_sync(kAll, v, lane * 7 + 3, width);  // srcLane past the width wraps in the segment
  o[1] = __shfl_up_sync(kAll, v, 3, width);
  o[2] = __shfl_down_sync(kAll, v, 5, width);
  o[3] = __shfl_xor_sync(kAll, v, 6, width);
  o[4] = static_cast<int>(__shfl_xor_sync(kAll, 0.5 * v, 1, width) * 2.0);  // an 8-byte value
}

// The source lanes as the programming guide describes them, written independently of the
// emulator's PTX-style formula.
int Source(int op, int lane, int width) {
  const int segment = lane / width * width;
  switch (op) {
    case 0:
      return segment + (lane * 7 + 3) % width;
    case 1:
      return lane - segment >= 3 ? lane - 3 : lane;
    case 2:
      return lane - segment + 5 < width ? lane + 5 : lane;
    case 3:
      return (lane ^ 6) < segment + width ? lane ^ 6 : lane;  // earlier segments only
    default:
      return (lane ^ 1) < segment + width ? lane ^ 1 : lane;
  }
}

TEST(CudaEmu, ShufflesMatchTheProgrammingGuide) {
  constexpr int kThreads = 64;  // two warps: no value crosses from one to the other
  for (int width : {32, 16, 8, 4, 2, 1}) {
    std::vector<int> out(kThreads * kOps, -1);
    ::emu::launch(ShuffleKernel, dim3(1), dim3(kThreads), 0, nullptr, out.data(), width);
    for (int tid = 0; tid < kThreads; ++tid)
      for (int op = 0; op < kOps; ++op) {
        const int warp = tid / 32, lane = tid % 32;
        EXPECT_EQ(out[tid * kOps + op], 100 * (warp * 32 + Source(op, lane, width)))
            << "width " << width << " thread " << tid << " op " << op;
      }
  }
}

// Two halves of a warp shuffle among themselves, each with its own mask (legal since sm_70).
void HalfWarpKernel(int* out) {
  const int lane = Lane();
  if (lane < 16) {
    out[lane] = __shfl_xor_sync(0x0000ffffu, lane, 1);
  } else {
    out[lane] = __shfl_down_sync(0xffff0000u, lane, 1);
  }
}

TEST(CudaEmu, PartialMasksShuffleAmongThemselves) {
  std::vector<int> out(32, -1);
  ::emu::launch(HalfWarpKernel, dim3(1), dim3(32), 0, nullptr, out.data());
  for (int lane = 0; lane < 32; ++lane)
    EXPECT_EQ(out[lane], lane < 16 ? lane ^ 1 : (lane < 31 ? lane + 1 : 31)) << lane;
}

// What the GPU would hang on or answer with an undefined value stops the emulated test.
void LaneExitsKernel(int* out) {
  if (Lane() == 5) return;
  out[Lane()] = __shfl_xor_sync(kAll, Lane(), 1);
}
void ReadsOutsideMaskKernel(int* out) {
  if (Lane() >= 16) return;
  out[Lane()] = __shfl_down_sync(0x0000ffffu, Lane(), 1);  // lane 15 reads lane 16
}
void BarrierAgainstShuffleKernel(int* out) {
  if (Lane() == 0) {
    __syncthreads();
  } else {
    out[Lane()] = __shfl_xor_sync(kAll, Lane(), 1);
  }
}
void MaskWithoutSelfKernel(int* out) {
  out[Lane()] = __shfl_sync(1u << ((Lane() + 1) % 32), Lane(), 0);
}

TEST(CudaEmuDeathTest, BrokenShufflesFailLoudly) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<int> out(32);
  auto run = [&out](void (*kernel)(int*)) {
    ::emu::launch(kernel, dim3(1), dim3(32), 0, nullptr, out.data());
  };
  EXPECT_DEATH(run(LaneExitsKernel),
               "lane 5 of the shuffle mask 0xffffffff did not arrive \\(it exited\\)");
  EXPECT_DEATH(run(ReadsOutsideMaskKernel), "lane 15 reads lane 16, outside the shuffle mask");
  EXPECT_DEATH(run(BarrierAgainstShuffleKernel),
               "lane 0 of the shuffle mask .* did not arrive \\(it waits at __syncthreads\\)");
  EXPECT_DEATH(run(MaskWithoutSelfKernel), "does not name the calling lane");
}

// warp_reduce_scatter: each warp's totals land once each (atomicAdd on zeros, so a total written
// by two lanes, or by none, shows), exactly (integer-valued floats), and warps stay apart.
float Term(int warp, int lane, int e) {
  return static_cast<float>((lane + 1) * (e + 3) + 1000 * warp);
}

template <int V>
void ReduceScatterKernel(float* out) {
  namespace detail = statetune::kernels::cuda_raw::detail;
  const int warp = static_cast<int>(threadIdx.x / 32);
  const unsigned lane = threadIdx.x % 32;
  float v[V];
  for (int e = 0; e < V; ++e) v[e] = Term(warp, static_cast<int>(lane), e);
  detail::warp_reduce_scatter(v, lane);
  if (detail::warp_sum_writer<V>(lane)) {
    for (int j = 0; j < detail::warp_sum_per_lane<V>(); ++j) {
      atomicAdd(out + warp * V + static_cast<int>(lane) * V / 32 + j, v[j]);
    }
  }
}

template <int V>
void CheckReduceScatter() {
  constexpr int kWarps = 2;
  std::vector<float> out(kWarps * V, 0.f);
  ::emu::launch(ReduceScatterKernel<V>, dim3(1), dim3(32 * kWarps), 0, nullptr, out.data());
  for (int warp = 0; warp < kWarps; ++warp)
    for (int e = 0; e < V; ++e) {
      float want = 0.f;
      for (int lane = 0; lane < 32; ++lane) want += Term(warp, lane, e);
      EXPECT_EQ(out[warp * V + e], want) << "V " << V << " warp " << warp << " element " << e;
    }
}

TEST(CudaEmu, WarpReduceScatterSumsEachValueOnce) {
  CheckReduceScatter<1>();
  CheckReduceScatter<2>();
  CheckReduceScatter<8>();
  CheckReduceScatter<16>();
  CheckReduceScatter<32>();
  CheckReduceScatter<64>();
  CheckReduceScatter<128>();
}

}  // namespace
