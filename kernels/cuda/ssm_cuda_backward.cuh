// Raw-pointer CUDA backward of the selective scan and of the causal conv1d (prefill without resume):
// the math of kernels/ssm_backward.h, on device pointers, for the at::Tensor glue
// (cuda_backend.cpp) and for tests that manage device memory themselves. Plain C++, like
// ssm_cuda.cuh, whose conventions hold here too (strides in elements, innermost dim contiguous,
// pool tensors [S, ...] with a slot stride, slots int32 / lengths int64, right padding).
//
// Outputs come in two kinds:
//   - per-position gradients (dx, ddelta, dz) have the activations' dtype and are written at every
//     position, 0 at padding;
//   - sums (dBm, dCm over channels; dA, ddelta_bias, dDskip over rows and time; the adapter
//     gradients per slot; conv dweight / dbias) are fp32, contiguous, and accumulated with
//     atomicAdd: the launcher zeroes them on `stream` first. A null pointer means "not wanted".
// The scan backward needs a device workspace of selective_scan_backward_workspace_floats(p) floats
// for its state checkpoints; the caller owns it (no allocation inside a launcher).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ssm_cuda.cuh"

namespace statetune::kernels::cuda_raw {

struct ScanBackwardParams {
  DType dtype = DType::kFloat32;
  int batch = 0;
  int seqlen = 0;  // L
  int dim = 0;     // D
  int dstate = 0;  // N, 1..kMaxDState
  int chunk = 64;  // time steps between state checkpoints (>= 1)
  // Inputs, as for selective_scan_prefill (resume = false).
  ActTensor x, delta, z, grad_out;  // [B, L, D]
  ActTensor Bm, Cm;                 // [B, L, N]
  const float* A = nullptr;         // [D, N] contiguous
  const float* Dskip = nullptr;     // [D] or nullptr
  const float* delta_bias = nullptr;  // [D] or nullptr
  const int64_t* lengths = nullptr;   // [B] or nullptr (full length)
  const int32_t* slots = nullptr;     // [B] or nullptr (slot 0)
  SlotTensor state_offset;            // [S, D, N]
  SlotTensor output_offset;           // [S, D]
  SlotTensor initial_state;           // [S, D, N]
  // Per-position gradients, activations' dtype, [B, L, D].
  OutTensor dx, ddelta, dz;
  // Sums, fp32 contiguous, zeroed by the launcher; nullptr: not computed.
  float* dBm = nullptr;             // [B, L, N] (required)
  float* dCm = nullptr;             // [B, L, N] (required)
  float* dA = nullptr;              // [D, N]
  float* ddelta_bias = nullptr;     // [D]
  float* dDskip = nullptr;          // [D]
  float* dstate_offset = nullptr;   // [S, D, N]; needs state_offset
  float* doutput_offset = nullptr;  // [S, D]; needs output_offset
  float* dinitial_state = nullptr;  // [S, D, N]; needs initial_state
  int num_slots = 0;                // S (needed with any adapter): the size of the adapter
                                    // gradients (zeroed as a whole); a batch row whose slot lies
                                    // outside [0, S) is left untouched (see ssm_cuda.cuh)
  float* workspace = nullptr;       // selective_scan_backward_workspace_floats(p) floats
};

// Floats of workspace the scan backward needs for these sizes (B, L, D, N, chunk).
size_t selective_scan_backward_workspace_floats(const ScanBackwardParams& p);
cudaError_t selective_scan_backward(const ScanBackwardParams& p, cudaStream_t stream);

struct ConvBackwardParams {
  DType dtype = DType::kFloat32;  // of x, grad_out and dx
  int batch = 0;
  int seqlen = 0;  // L
  int dim = 0;     // D
  int width = 0;   // K, 1..kMaxConvWidth
  ActTensor x, grad_out;  // [B, L, D]
  OutTensor dx;           // [B, L, D], 0 at padding
  const void* weight = nullptr;  // [D, K] contiguous
  DType weight_dtype = DType::kFloat32;
  const void* bias = nullptr;  // [D] or nullptr
  DType bias_dtype = DType::kFloat32;
  const int64_t* lengths = nullptr;  // [B] or nullptr
  float* dweight = nullptr;  // [D, K] fp32, zeroed by the launcher; nullptr: not computed
  float* dbias = nullptr;    // [D] fp32, zeroed by the launcher; nullptr: not computed
};

cudaError_t causal_conv1d_backward(const ConvBackwardParams& p, cudaStream_t stream);

}  // namespace statetune::kernels::cuda_raw
