// The CPU causal depthwise conv1d (+ SiLU): threads over (batch row x chunk of channels), the inner
// loops run over contiguous channels with the weights transposed to [K, D] so they vectorise.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kernels/ssm_kernels.h"
#include "kernels/cpu_common.h"  // last: it switches on the level's instruction set

namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL {
namespace {

using namespace detail;

struct ConvArgs {
  int64_t B, L, D, K;
  const float* w;   // [D, K]
  const float* wt;  // [K, D]
  const float* bias;
  const int64_t* rows;
  float* state;  // [C, D, K-1] rows of stride state_rs
  int64_t state_rs;
};

struct ConvPrepared {
  ConvArgs g;
  at::Tensor w, bias, wt, rows_keep;
};

ConvPrepared prepare(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                     LayerCache& cache, int64_t B, int64_t D, bool need_transposed) {
  TORCH_CHECK(x.device().is_cpu(), "cpu conv: tensors must be on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "cpu conv: x must be fp32 or bf16");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == D && weight.size(1) >= 1,
              "conv weight must be [D, K]");
  ConvPrepared p;
  const int64_t K = weight.size(1);
  p.w = f32c(weight);
  p.bias = f32c(bias);
  if (p.bias.defined()) TORCH_CHECK(p.bias.numel() == D, "conv bias must be [D]");
  p.g.B = B, p.g.D = D, p.g.K = K, p.g.L = 0;
  p.g.w = p.w.data_ptr<float>();
  if (need_transposed) {
    p.wt = p.w.t().contiguous();
    p.g.wt = p.wt.data_ptr<float>();
  } else {
    p.g.wt = nullptr;
  }
  p.g.bias = p.bias.defined() ? p.bias.data_ptr<float>() : nullptr;
  p.g.rows = rows_of(cache, B, p.rows_keep);
  p.g.state_rs = cache_row_stride(cache.conv_state, D, K - 1, "cache.conv_state");
  check_rows(p.g.rows, B, cache.conv_state.size(0));
  p.g.state = cache.conv_state.data_ptr<float>();
  return p;
}

template <typename T>
void prefill_impl(const ConvArgs& g, const Act<T>& x, const int64_t* lengths, bool resume, T* out) {
  const int64_t nchunk = (g.D + kChunk - 1) / kChunk, K = g.K, K1 = g.K - 1;
  at::parallel_for(0, g.B * nchunk, 1, [&](int64_t begin, int64_t end) {
    float acc[kChunk];
    for (int64_t w = begin; w < end; ++w) {
      const int64_t b = w / nchunk, d0 = (w % nchunk) * kChunk, d1 = std::min(g.D, d0 + kChunk);
      const int64_t nd = d1 - d0, len = lengths[b];
      float* hist = g.state + g.rows[b] * g.state_rs;  // [D, K-1]
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t i = 0; i < nd; ++i) acc[i] = g.bias ? g.bias[d0 + i] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t j = t - K1 + k;  // input position of tap k
          const float* wk = g.wt + k * g.D + d0;
          if (j >= 0) {
            const T* xs = x.at(b, j) + d0;
            for (int64_t i = 0; i < nd; ++i) acc[i] += wk[i] * to_f(xs[i]);
          } else if (resume) {
            for (int64_t i = 0; i < nd; ++i) acc[i] += wk[i] * hist[(d0 + i) * K1 + K1 + j];
          }
        }
        silu_inplace(acc, nd);
        T* ot = out + (b * g.L + t) * g.D + d0;
        for (int64_t i = 0; i < nd; ++i) ot[i] = from_f<T>(acc[i]);
      }
      for (int64_t t = len; t < g.L; ++t) {
        T* ot = out + (b * g.L + t) * g.D + d0;
        for (int64_t i = 0; i < nd; ++i) ot[i] = from_f<T>(0.0f);
      }
      // The last K-1 inputs, history included. Slot i reads history slot len+i >= i, so writing in
      // ascending order never reads an overwritten value.
      for (int64_t i = 0; i < nd; ++i) {
        float* hd = hist + (d0 + i) * K1;
        for (int64_t q = 0; q < K1; ++q) {
          const int64_t j = len - K1 + q;
          hd[q] = j >= 0 ? to_f(x.at(b, j)[d0 + i]) : (resume ? hd[K1 + j] : 0.0f);
        }
      }
    }
  });
}

// KT > 0 fixes K at compile time (K = 4 in every Mamba-1 checkpoint) so a channel's window stays in
// registers and the shift is three moves.
template <typename T, int KT>
void step_impl(const ConvArgs& g, const Act<T>& x, T* out) {
  const int64_t nchunk = (g.D + kChunk - 1) / kChunk, K = KT > 0 ? KT : g.K, K1 = K - 1;
  at::parallel_for(0, g.B * nchunk, 1, [&](int64_t begin, int64_t end) {
    float acc[kChunk];
    for (int64_t w = begin; w < end; ++w) {
      const int64_t b = w / nchunk, d0 = (w % nchunk) * kChunk, d1 = std::min(g.D, d0 + kChunk);
      const int64_t nd = d1 - d0;
      float* __restrict hist = g.state + g.rows[b] * g.state_rs;
      const float* __restrict wts = g.w;
      const T* __restrict xs = x.at(b, 0) + d0;
      for (int64_t i = 0; i < nd; ++i) {
        const int64_t d = d0 + i;
        float* hd = hist + d * K1;
        const float* wd = wts + d * K;
        const float xv = to_f(xs[i]);
        float a = g.bias ? g.bias[d] : 0.0f;
        for (int64_t k = 0; k < K1; ++k) a += wd[k] * hd[k];
        a += wd[K1] * xv;
        acc[i] = a;
        for (int64_t k = 0; k + 1 < K1; ++k) hd[k] = hd[k + 1];
        if (K1 > 0) hd[K1 - 1] = xv;
      }
      silu_inplace(acc, nd);
      T* ot = out + b * g.D + d0;
      for (int64_t i = 0; i < nd; ++i) ot[i] = from_f<T>(acc[i]);
    }
  });
}

template <typename T>
void step_dispatch_k(const ConvArgs& g, const Act<T>& x, T* out) {
  if (g.K == 4) {
    step_impl<T, 4>(g, x, out);
  } else {
    step_impl<T, 0>(g, x, out);
  }
}

}  // namespace

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out) {
  TORCH_CHECK(x.dim() == 3, "conv prefill: x must be [B, L, D]");
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  ConvPrepared p = prepare(x, weight, bias, cache, B, D, /*need_transposed=*/true);
  p.g.L = L;
  at::Tensor len_keep, x_keep;
  const int64_t* len = lengths_of(lengths, B, L, len_keep);
  prepare_out(out, {B, L, D}, x);
  if (x.scalar_type() == at::kFloat) {
    prefill_impl<float>(p.g, act_of<float>(x, x_keep), len, resume, out.data_ptr<float>());
  } else {
    prefill_impl<c10::BFloat16>(p.g, act_of<c10::BFloat16>(x, x_keep), len, resume,
                                out.data_ptr<c10::BFloat16>());
  }
}

void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out) {
  TORCH_CHECK(x.dim() == 2, "conv step: x must be [B, D]");
  const int64_t B = x.size(0), D = x.size(1);
  ConvPrepared p = prepare(x, weight, bias, cache, B, D, /*need_transposed=*/false);
  at::Tensor x_keep;
  prepare_out(out, {B, D}, x);
  if (x.scalar_type() == at::kFloat) {
    step_dispatch_k<float>(p.g, act_of<float>(x, x_keep), out.data_ptr<float>());
  } else {
    step_dispatch_k<c10::BFloat16>(p.g, act_of<c10::BFloat16>(x, x_keep),
                                   out.data_ptr<c10::BFloat16>());
  }
}

}  // namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL

STATETUNE_CPU_LEVEL_END
