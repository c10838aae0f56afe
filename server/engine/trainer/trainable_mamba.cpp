#include "server/engine/trainer/trainable_mamba.h"

#include <stdexcept>

#include "server/engine/trainer/scan_autograd.h"

namespace statetune::engine::trainer {
namespace {

// Differentiable RMSNorm in fp32 (as the inference path computes it), cast to `out_dtype`.
at::Tensor rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::ScalarType out_dtype) {
  const at::Tensor scale = at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (x * scale * weight).to(out_dtype);
}

at::Tensor linear(const at::Tensor& a, const at::Tensor& w, const at::Tensor& bias) {
  return bias.defined() ? at::addmm(bias, a, w.t()) : at::mm(a, w.t());
}

// One slot, every row reading it (undefined `slots` = slot 0 for every row).
at::Tensor one_slot(const at::Tensor& t, int64_t layer) {
  return t.defined() ? t.select(0, layer).unsqueeze(0) : at::Tensor();
}

const at::Tensor& weight(const std::map<std::string, at::Tensor>& w, const std::string& name,
                         at::IntArrayRef shape) {
  const auto it = w.find(name);
  if (it == w.end()) throw std::invalid_argument("TrainableMamba: weight " + name + " is missing");
  if (it->second.sizes() != shape || it->second.scalar_type() != at::kFloat) {
    throw std::invalid_argument("TrainableMamba: weight " + name + " must be fp32 of shape " +
                                c10::str(shape) + ", got " + c10::str(it->second.sizes()));
  }
  return it->second;
}

}  // namespace

std::vector<at::Tensor> AdapterTensors::defined() const {
  std::vector<at::Tensor> out;
  for (const at::Tensor* t : {&state_offset, &output_offset, &initial_state}) {
    if (t->defined()) out.push_back(*t);
  }
  return out;
}

TrainableMamba::TrainableMamba(const MambaModel& model, int64_t scan_chunk)
    : config_(model.config()), device_(model.device()), dtype_(model.dtype()), scan_chunk_(scan_chunk) {
  if (scan_chunk < 1) throw std::invalid_argument("TrainableMamba: scan_chunk must be >= 1");
  const std::map<std::string, at::Tensor> w = model.weight_views();
  embedding_ = w.at("embedding");
  lm_head_ = w.at("lm_head");
  norm_f_ = w.at("norm_f");
  layers_.reserve(static_cast<size_t>(config_.n_layer));
  for (int64_t i = 0; i < config_.n_layer; ++i) layers_.push_back(model.layer_weights(i));
}

TrainableMamba::TrainableMamba(const MambaConfig& config, const std::map<std::string, at::Tensor>& weights,
                               int64_t scan_chunk)
    : config_(config), dtype_(at::kFloat), scan_chunk_(scan_chunk), hf_weights_(weights) {
  if (scan_chunk < 1) throw std::invalid_argument("TrainableMamba: scan_chunk must be >= 1");
  const int64_t V = config_.vocab_size, M = config_.d_model;
  embedding_ = weight(weights, "backbone.embeddings.weight", {V, M});
  device_ = embedding_.device();
  lm_head_ = config_.tie_embeddings ? embedding_ : weight(weights, "lm_head.weight", {V, M});
  norm_f_ = weight(weights, "backbone.norm_f.weight", {M});
  for (int64_t i = 0; i < config_.n_layer; ++i) layer(i);  // checks every layer's weights now
}

LayerWeights TrainableMamba::layer(int64_t i) const {
  if (hf_weights_.empty()) return layers_[static_cast<size_t>(i)];
  // Every weight is fp32 here (the precision only matters to inference's bf16 mode).
  return split_layer_weights(config_, i, [this](const std::string& name, const std::vector<int64_t>& shape,
                                                WeightPrecision) { return weight(hf_weights_, name, shape); });
}

at::Tensor TrainableMamba::hidden(const at::Tensor& tokens, const at::Tensor& lengths,
                                  const AdapterTensors& adapter) const {
  if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != at::kLong) {
    throw std::invalid_argument("TrainableMamba: tokens must be [B, L] int64");
  }
  const int64_t B = tokens.size(0), L = tokens.size(1), T = B * L;
  const int64_t M = config_.d_model, D = config_.d_inner, N = config_.d_state;
  if (B == 0 || L == 0) throw std::invalid_argument("TrainableMamba: empty batch");
  if (!lengths.defined() || lengths.dim() != 1 || lengths.size(0) != B ||
      lengths.scalar_type() != at::kLong || !lengths.device().is_cpu()) {
    throw std::invalid_argument("TrainableMamba: lengths must be [B] int64 on the CPU");
  }
  const int64_t* len = lengths.contiguous().data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    if (len[b] < 1 || len[b] > L) {
      throw std::invalid_argument("TrainableMamba: lengths[" + std::to_string(b) + "] outside [1, L]");
    }
  }
  auto check = [&](const at::Tensor& t, std::vector<int64_t> shape, const char* what) {
    if (!t.defined()) return;
    if (t.sizes() != at::IntArrayRef(shape) || t.scalar_type() != at::kFloat) {
      throw std::invalid_argument(std::string("TrainableMamba: adapter ") + what +
                                  " must be fp32 of the model's shape");
    }
  };
  check(adapter.state_offset, {config_.n_layer, D, N}, "state_offset");
  check(adapter.output_offset, {config_.n_layer, D}, "output_offset");
  check(adapter.initial_state, {config_.n_layer, D, N}, "initial_state");

  const at::Tensor tok = tokens.to(device_).reshape({T});
  // On the device once per forward, not per kernel call (each layer's conv and scan, forward and
  // backward, would otherwise copy it again).
  const at::Tensor len_dev = lengths.contiguous().to(device_);
  // LibTorch 1.13's custom autograd Functions reject undefined tensor inputs (VariableInfo asks them
  // for a device), so the optional inputs of the scan and the conv get explicit neutral values: every
  // row on slot 0, zero adapters (a zero state_offset / output_offset adds nothing, a zero initial
  // state is the default), zero conv bias.
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  const at::Tensor slots = at::zeros({B}, at::TensorOptions().dtype(at::kInt).device(device_));
  const at::Tensor zero_dn = at::zeros({1, D, N}, f32);
  const at::Tensor zero_d = at::zeros({1, D}, f32);
  const at::Tensor zero_bias = at::zeros({D}, f32);
  at::Tensor h = at::index_select(embedding_, 0, tok).to(at::kFloat);  // [T, M] residual, fp32
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    const LayerWeights l = layer(i);
    const at::Tensor normed = rmsnorm(h, l.norm, config_.norm_eps, dtype_);
    const at::Tensor x = linear(normed, l.in_x, l.in_x_b).view({B, L, D});
    const at::Tensor z = linear(normed, l.in_z, l.in_z_b).view({B, L, D});
    const at::Tensor xc = causal_conv1d(x, l.conv_w, l.conv_b.defined() ? l.conv_b : zero_bias, len_dev);  // [B, L, D]
    const at::Tensor xc2 = xc.reshape({T, D});
    const at::Tensor dt = at::mm(xc2, l.x_dt.t());
    const at::Tensor Bm = at::mm(xc2, l.x_B.t()).view({B, L, N});
    const at::Tensor Cm = at::mm(xc2, l.x_C.t()).view({B, L, N});
    const at::Tensor delta = at::mm(dt, l.dt_w.t()).view({B, L, D});
    kernels::LayerAdapters ad;
    ad.slots = slots;
    ad.state_offset = adapter.state_offset.defined() ? one_slot(adapter.state_offset, i) : zero_dn;
    ad.output_offset = adapter.output_offset.defined() ? one_slot(adapter.output_offset, i) : zero_d;
    ad.initial_state = adapter.initial_state.defined() ? one_slot(adapter.initial_state, i) : zero_dn;
    ScanAutogradOptions so;
    so.chunk = scan_chunk_;
    const at::Tensor y = selective_scan({/*x=*/xc, /*delta_in=*/delta, /*delta_bias=*/l.dt_b,
                                         /*A=*/l.A, Bm, Cm, l.Dskip, z, len_dev, ad},
                                        so);
    at::Tensor o = linear(y.reshape({T, D}), l.out_w, l.out_b);
    h = h + (o.scalar_type() == at::kFloat ? o : o.to(at::kFloat));
  }
  return rmsnorm(h, norm_f_, config_.norm_eps, dtype_).view({B, L, M});
}

at::Tensor TrainableMamba::logits(const at::Tensor& hidden_rows) const {
  const at::Tensor out = at::mm(hidden_rows, lm_head_.t());
  return out.scalar_type() == at::kFloat ? out : out.to(at::kFloat);
}

at::Tensor TrainableMamba::forward(const at::Tensor& tokens, const at::Tensor& lengths,
                                   const AdapterTensors& adapter) const {
  const at::Tensor hid = hidden(tokens, lengths, adapter);
  const int64_t B = hid.size(0), L = hid.size(1);
  return logits(hid.reshape({B * L, hid.size(2)})).view({B, L, config_.vocab_size});
}

}  // namespace statetune::engine::trainer
