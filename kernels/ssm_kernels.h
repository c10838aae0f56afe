// The selective-scan and causal-conv1d kernels of the Mamba-1 mixer, with per-row state-offset
// adapters read from a slot pool. The formulas are the contract in docs/adapter-math.md.
//
// Three implementations stand behind this one interface:
//   ref::   plain LibTorch ops, one time step at a time: the definition every backend is tested against;
//   cpu     (kernels/cpu_*.cpp): vectorised over D x N, threads over batch x D;
//   cuda    (kernels/cuda/*.cu): dispatched to when the tensors live on a CUDA device.
// The un-namespaced functions dispatch on the device of `x`.
//
// Layout conventions (all "channel last", the layout the projections produce without transposes):
//   B = batch rows, L = padded sequence length, D = d_inner, N = d_state, K = d_conv, C = cache rows,
//   S = adapter slots. Activations x, z, delta: [B, L, D]; Bm, Cm: [B, L, N]; decode step drops L.
//   Activations are fp32 or bf16 (all of one call in one dtype); A, Dskip, delta_bias, states and
//   adapter tensors are always fp32; the output has the activations' dtype.
// Sequences are right-padded: positions t >= lengths[b] are padding. They do not advance the state
// (as if delta were 0) and their outputs are written as 0.
#pragma once

#include <ATen/ATen.h>

namespace statetune::kernels {

// The adapter tensors of ONE layer, as views into the pool [S, layers, ...] (see AdapterPool).
// Row b reads slot slots[b]; slot 0 is the zero adapter. Any tensor may be undefined (that adapter
// kind is not in use): it then contributes nothing. Views may have any stride on the slot dimension
// but must be contiguous inside a slot.
struct LayerAdapters {
  at::Tensor slots;          // [B] int32, on the device of x; undefined = every row uses slot 0
  at::Tensor state_offset;   // [S, D, N] fp32: y_t[d] += sum_n C_t[n] * H'[d, n]
  at::Tensor output_offset;  // [S, D] fp32:    y_t[d] += Y'[d]
  at::Tensor initial_state;  // [S, D, N] fp32: h_0 = H0 (prefill only, when not resuming)
};

// The recurrent state of the sequences, one row per sequence, for ONE layer. The engine keeps a
// cache of C rows per layer; `rows` says which cache row batch row b reads and writes.
struct LayerCache {
  at::Tensor conv_state;  // [C, D, K-1] fp32: the last K-1 inputs of the conv, oldest first
  at::Tensor ssm_state;   // [C, D, N] fp32
  at::Tensor rows;        // [B] int64, on the device of x
};

// ---------------------------------------------------------------------------------------------
// Causal depthwise conv1d followed by SiLU.
//   out[b,t,d] = silu(bias[d] + sum_{k<K} weight[d,k] * xin[b, t-(K-1)+k, d])
// where xin[b, t<0] comes from the cache row's conv_state when `resume`, else 0.
// Writes the last K-1 valid inputs of each row (including history when a row is shorter than K-1)
// into cache.conv_state[rows[b]].
//   x: [B, L, D]; weight: [D, K] fp32 or x's dtype; bias: [D] or undefined; lengths: [B] int64 (CPU).
void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out);

// One decode step of the conv: shifts x into the cache row and returns silu(conv) for it.
//   x: [B, D]; out: [B, D]
void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out);

// ---------------------------------------------------------------------------------------------
// The tensors of one selective-scan call (prefill, decode step or backward), named once.
//   x, delta_in, z: [B, L, D] (prefill, backward) or [B, D] (step), all in x's dtype;
//   Bm, Cm: [B, L, N] or [B, N], x's dtype; A: [D, N]; Dskip, delta_bias: [D] or undefined;
//   lengths: [B] int64, prefill and backward only (the step has no padding).
// Every tensor lives on x's device, except that the index tensors (lengths, adapters.slots, cache
// rows) may also live on the CPU: only there are their values checked (kernels/batch_indices.h).
struct ScanArgs {
  at::Tensor x, delta_in, delta_bias, A, Bm, Cm, Dskip, z;
  at::Tensor lengths;
  LayerAdapters adapters;
};

// A ScanArgs whose shapes, dtypes, devices and indices have been checked, with the sizes found:
// what every backend (ref::, cpu::, cuda::) receives, so none of them checks the arguments again.
// The dispatching functions below build it once per call; a test that calls a backend directly
// builds it the same way. It refers to the ScanArgs it checked, which must outlive it.
class CheckedScan {
 public:
  // Each throws c10::Error (TORCH_CHECK) naming what is wrong: a shape that does not fit, an
  // activation in another dtype than x or on another device, a length outside [0, L], a slot
  // outside the adapter pool, a cache row out of range or used twice, a cache that is not fp32 and
  // contiguous inside its rows (the kernels write rows in place).
  static CheckedScan prefill(const ScanArgs& args, const LayerCache& cache);
  static CheckedScan step(const ScanArgs& args, const LayerCache& cache);
  // grad_out: [B, L, D]. The backward also accepts fp64 activations (gradient checks).
  static CheckedScan backward(const ScanArgs& args, const at::Tensor& grad_out);
  static CheckedScan prefill(ScanArgs&&, const LayerCache&) = delete;
  static CheckedScan step(ScanArgs&&, const LayerCache&) = delete;
  static CheckedScan backward(ScanArgs&&, const at::Tensor&) = delete;

  const ScanArgs& args;
  // L = 1 for a step; S = the slot count of the adapter tensors, 0 when none is given.
  const int64_t B, L, D, N, S;

 private:
  CheckedScan(const ScanArgs& a, int64_t b, int64_t l, int64_t d, int64_t n, int64_t s)
      : args(a), B(b), L(l), D(d), N(n), S(s) {}
  static CheckedScan check(const ScanArgs& args, bool step, bool backward);
};

// Selective scan over a whole (padded) prompt, including the gate:
//   delta = softplus(delta_in + delta_bias)            (PyTorch softplus, threshold 20)
//   h_0   = cache.ssm_state[rows[b]] if resume, else initial_state[slot] (or 0)
//   h_t   = exp(delta_t*A) * h_{t-1} + delta_t * Bm_t * x_t
//   y_t   = C_t . (h_t + state_offset[slot]) + Dskip*x_t + output_offset[slot]
//   out_t = y_t * silu(z_t)
// and stores h_{lengths[b]} into cache.ssm_state[rows[b]].
// out: [B, L, D] (resized if needed, so callers can reuse it).
void selective_scan_prefill(const ScanArgs& args, LayerCache& cache, bool resume, at::Tensor& out);

// One decode step: the same recurrence for a single token per row, updating the cache in place.
// out: [B, D]
void selective_scan_step(const ScanArgs& args, LayerCache& cache, at::Tensor& out);

// Whether the CUDA kernels were compiled into this build and LibTorch can hand them CUDA tensors.
bool cuda_kernels_available();

// The reference: LibTorch ops only, one time step at a time. Slow; never used by the engine: it is
// the definition the tests compare the backends with.
namespace ref {
void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out);
void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out);
void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume, at::Tensor& out);
void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out);
}  // namespace ref

// The fast CPU backend (what the dispatching functions call for CPU tensors).
namespace cpu {
void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out);
void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out);
void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume, at::Tensor& out);
void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out);
}  // namespace cpu

}  // namespace statetune::kernels
