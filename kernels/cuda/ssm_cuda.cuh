// Raw-pointer CUDA kernels for the Mamba-1 selective scan and causal depthwise conv1d, with per-row
// state-offset adapters read from a slot pool. The math is the contract in kernels/ssm_kernels.h and
// docs/adapter-math.md; this header is plain C++ (no LibTorch, no device code) so the
// launchers can be driven both by the at::Tensor glue (cuda_backend.cpp, CUDA LibTorch only) and by
// tests that manage device memory themselves.
//
// Conventions shared by all launchers:
//   - Pointers are device pointers. Activations (x, delta, z, Bm, Cm, out) are fp32 or bf16 as
//     `dtype` says; every other tensor is fp32, except the conv weight/bias whose dtype is given.
//   - Strides are in elements. Activations may have any batch/time stride (views of a fused
//     projection output) but their innermost dimension (D or N) must be contiguous.
//   - Pool tensors (state_offset, output_offset, initial_state) are [S, ...] with a slot stride,
//     contiguous inside a slot. Cache tensors are [C, ...] with a row stride, contiguous inside a row.
//   - slots: int32 [B] (nullptr: every row uses slot 0). rows: int64 [B] (nullptr: row b uses
//     cache row b). lengths: int64 [B] (nullptr: every row is full length); values are clamped to
//     [0, L]. Positions t >= lengths[b] do not advance any state and produce output 0.
//   - Indices are validated on the host where they are built (kernels/batch_indices.h: rows in
//     range and unique, slots in range). The kernels still get the counts (num_rows, num_slots)
//     and leave a batch row whose row or slot is out of range entirely untouched (no state, no
//     output written), so a bad index can never reach another sequence's state or another
//     tenant's adapter. Rows must be unique: two batch rows on one cache row race.
//   - Launchers only enqueue work on `stream` and return the launch status: cudaSuccess,
//     cudaErrorInvalidValue when a size is outside what the kernels support (checked before any
//     launch), or the launch's own error (cudaPeekAtLastError right after it: an earlier,
//     unrelated error is neither cleared nor blamed on the launch when the launch itself worked).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace statetune::kernels::cuda_raw {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1 };

// Largest d_state the scan kernels keep in registers, and largest conv width.
inline constexpr int kMaxDState = 64;
inline constexpr int kMaxConvWidth = 8;

// Threads per block for the kernels that give one thread to each (row, channel) and walk time
// sequentially (scan prefill, scan backward): fewer than max_threads when B x D would otherwise
// leave multiprocessors idle, since parallelism only comes from B x D. Plain arithmetic, so tests
// can say which block size a shape gets on a given GPU (e.g. 132 SMs on an H200).
inline int block_threads_for(int batch, int dim, int max_threads, int multiprocessors) {
  int threads = max_threads;
  while (threads > 32) {
    const int64_t blocks = static_cast<int64_t>(batch) * ((dim + threads - 1) / threads);
    if (blocks >= 2LL * multiprocessors) break;
    threads /= 2;
  }
  return threads;
}

struct ActTensor {
  const void* ptr = nullptr;
  int64_t batch_stride = 0;
  int64_t time_stride = 0;  // ignored by the step launchers
};

struct OutTensor {
  void* ptr = nullptr;
  int64_t batch_stride = 0;
  int64_t time_stride = 0;  // ignored by the step launchers
};

struct SlotTensor {  // fp32 [S, ...]; ptr == nullptr: this adapter kind is not in use
  const float* ptr = nullptr;
  int64_t slot_stride = 0;
};

struct ScanParams {
  DType dtype = DType::kFloat32;
  int batch = 0;
  int seqlen = 0;  // L (prefill only)
  int dim = 0;     // D
  int dstate = 0;  // N, 1..kMaxDState
  ActTensor x, delta, z;  // [B, L, D] (prefill) or [B, D] (step)
  ActTensor Bm, Cm;       // [B, L, N] or [B, N]
  OutTensor out;          // [B, L, D] or [B, D]
  const float* A = nullptr;           // [D, N] contiguous
  const float* Dskip = nullptr;       // [D] or nullptr
  const float* delta_bias = nullptr;  // [D] or nullptr
  const int64_t* lengths = nullptr;   // [B] (prefill only)
  const int32_t* slots = nullptr;     // [B]
  SlotTensor state_offset;            // [S, D, N]
  SlotTensor output_offset;           // [S, D]
  SlotTensor initial_state;           // [S, D, N] (prefill only, when !resume)
  int num_slots = 0;                  // S (needed when an adapter tensor is given)
  float* ssm_state = nullptr;         // [C, D, N]: read (resume / step) and written
  int64_t ssm_state_row_stride = 0;
  int64_t num_rows = 0;           // C, the cache's capacity (>= B when rows is nullptr)
  const int64_t* rows = nullptr;  // [B]
  bool resume = false;            // prefill: start from ssm_state[rows[b]]
};

// Whole (right-padded) prompt; stores h_{lengths[b]} into ssm_state[rows[b]].
cudaError_t selective_scan_prefill(const ScanParams& p, cudaStream_t stream);
// One token per row; reads and updates ssm_state[rows[b]] in place. seqlen, lengths, resume and
// initial_state are ignored.
cudaError_t selective_scan_step(const ScanParams& p, cudaStream_t stream);

struct ConvParams {
  DType dtype = DType::kFloat32;  // of x and out
  int batch = 0;
  int seqlen = 0;  // L (prefill only)
  int dim = 0;     // D
  int width = 0;   // K, 1..kMaxConvWidth
  ActTensor x;     // [B, L, D] or [B, D]
  OutTensor out;   // [B, L, D] or [B, D]
  const void* weight = nullptr;  // [D, K] contiguous
  DType weight_dtype = DType::kFloat32;
  const void* bias = nullptr;  // [D] or nullptr
  DType bias_dtype = DType::kFloat32;
  const int64_t* lengths = nullptr;  // [B] (prefill only)
  float* conv_state = nullptr;       // [C, D, K-1], oldest input first
  int64_t conv_state_row_stride = 0;
  int64_t num_rows = 0;           // C, the cache's capacity (>= B when rows is nullptr)
  const int64_t* rows = nullptr;  // [B]
  bool resume = false;            // prefill: inputs before t=0 come from conv_state, else 0
};

// out = silu(conv(x) + bias); writes the last K-1 valid inputs of each row into conv_state[rows[b]].
cudaError_t causal_conv1d_prefill(const ConvParams& p, cudaStream_t stream);
// Shifts x into conv_state[rows[b]] and writes silu(conv) for it.
cudaError_t causal_conv1d_step(const ConvParams& p, cudaStream_t stream);

}  // namespace statetune::kernels::cuda_raw
