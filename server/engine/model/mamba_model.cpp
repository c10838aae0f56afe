#include "server/engine/model/mamba_model.h"

#include <fstream>
#include <map>
#include <regex>
#include <stdexcept>
#include <vector>

#include "kernels/batch_indices.h"
#include "kernels/rmsnorm.h"
#include "kernels/ssm_kernels.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/safetensors.h"

namespace statetune::engine {
namespace {

using safetensors::shape_string;

// A workspace tensor of the given shape and options, reusing its storage when it is big enough
// (resize_ only reallocates when growing), so the decode loop allocates nothing once warm.
at::Tensor& fit(at::Tensor& t, at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!t.defined() || t.scalar_type() != options.dtype().toScalarType() ||
      t.device() != options.device()) {
    t = at::empty(sizes, options);
  } else if (t.sizes() != sizes) {
    t.resize_(sizes);
  }
  return t;
}

using kernels::rmsnorm;

// out = a @ w^T (+ bias); w is [out_features, in_features].
void linear_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& w, const at::Tensor& bias) {
  if (bias.defined()) {
    at::addmm_out(out, bias, a, w.t());
  } else {
    at::mm_out(out, a, w.t());
  }
}

}  // namespace

struct MambaModel::Weights {
  at::Tensor embedding;  // [V, M] compute dtype
  at::Tensor lm_head;    // [V, M] compute dtype (the embedding itself when tied)
  at::Tensor norm_f;     // [M] fp32
  std::vector<LayerWeights> layers;
};

struct MambaModel::Workspace {
  at::Tensor hidden;       // [T, M] fp32: the residual stream
  at::Tensor normed;       // [T, M] compute
  at::Tensor emb;          // [T, M] compute (bf16 embedding lookups)
  at::Tensor xz;           // [T, 2D] compute: in_proj's output, x and z side by side (one GEMM)
  at::Tensor xc;           // [T, D] compute: x after conv + silu
  at::Tensor dbc;          // [T, R + 2N] compute: x_proj's output, dt, B and C side by side
  at::Tensor delta;        // [T, D]
  at::Tensor y;            // [T, D] scan output
  at::Tensor o;            // [T, M] out_proj (bf16 path)
  at::Tensor last;         // [B, M] fp32 hidden at each row's last position
  at::Tensor last_normed;  // [B, M] compute
  at::Tensor logits_c;     // [B, V] compute dtype (bf16 path)
  at::Tensor last_index;   // [B] int64
};

MambaModel::~MambaModel() = default;

std::shared_ptr<MambaModel::Workspace> MambaModel::new_workspace() { return std::make_shared<Workspace>(); }

const LayerWeights& MambaModel::layer_weights(int64_t i) const {
  if (i < 0 || i >= config_.n_layer) throw std::out_of_range("MambaModel::layer_weights: no layer " + std::to_string(i));
  return weights_->layers[static_cast<size_t>(i)];
}

std::map<std::string, at::Tensor> MambaModel::weight_views() const {
  const Weights& W = *weights_;
  std::map<std::string, at::Tensor> out;
  out["embedding"] = W.embedding;
  out["lm_head"] = W.lm_head;
  out["norm_f"] = W.norm_f;
  auto put = [&out](const std::string& name, const at::Tensor& t) {
    if (t.defined()) out[name] = t;
  };
  for (size_t i = 0; i < W.layers.size(); ++i) {
    const LayerWeights& l = W.layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    put(p + "norm", l.norm);
    put(p + "in_x", l.in_x);
    put(p + "in_z", l.in_z);
    put(p + "in_x_b", l.in_x_b);
    put(p + "in_z_b", l.in_z_b);
    put(p + "conv_w", l.conv_w);
    put(p + "conv_b", l.conv_b);
    put(p + "x_dt", l.x_dt);
    put(p + "x_B", l.x_B);
    put(p + "x_C", l.x_C);
    put(p + "dt_w", l.dt_w);
    put(p + "dt_b", l.dt_b);
    put(p + "A", l.A);
    put(p + "Dskip", l.Dskip);
    put(p + "out_w", l.out_w);
    put(p + "out_b", l.out_b);
    put(p + "out_b", l.out_b);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
StateCache::StateCache(const MambaConfig& config, int64_t capacity, at::Device device, int64_t scratch_rows)
    : capacity_(capacity) {
  if (capacity <= 0) throw std::invalid_argument("StateCache: capacity must be positive");
  if (scratch_rows < 0) throw std::invalid_argument("StateCache: scratch_rows must not be negative");
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  const int64_t C = capacity + scratch_rows;
  conv = at::zeros({config.n_layer, C, config.d_inner, config.d_conv - 1}, opts);
  ssm = at::zeros({config.n_layer, C, config.d_inner, config.d_state}, opts);
}

int64_t StateCache::bytes_per_sequence(const MambaConfig& c) {
  return c.n_layer * c.d_inner * ((c.d_conv - 1) + c.d_state) * static_cast<int64_t>(sizeof(float));
}

// ---------------------------------------------------------------------------------------------
std::unique_ptr<MambaModel> MambaModel::load(const std::filesystem::path& dir, const LoadOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16) {
    throw std::invalid_argument(std::string("MambaModel: compute dtype must be float or bfloat16, not ") +
                                c10::toString(options.dtype));
  }
  const auto config_path = dir / "config.json";
  nlohmann::json cj;
  {
    // A model's config.json is a few hundred bytes.
    const std::string text = read_file(config_path, size_t{1} << 20);
    try {
      cj = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(config_path.string() + ": not JSON: " + e.what());
    }
  }
  std::unique_ptr<MambaModel> model(new MambaModel());
  try {
    model->config_ = MambaConfig::from_json(cj);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(config_path.string() + ": " + e.what());
  }
  model->options_ = options;
  MambaConfig& c = model->config_;
  const safetensors::Checkpoint ckpt = safetensors::Checkpoint::open(dir);
  const int64_t M = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;

  std::string prefix_emb;
  if (ckpt.contains("backbone.embeddings.weight")) {
    prefix_emb = "backbone.embeddings.weight";
  } else if (ckpt.contains("backbone.embedding.weight")) {
    prefix_emb = "backbone.embedding.weight";
  } else {
    throw std::runtime_error(ckpt.description() +
                             ": tensor backbone.embeddings.weight (Hugging Face naming) or "
                             "backbone.embedding.weight (mamba_ssm naming) is missing");
  }
  // The embedding may hold the padded vocabulary (usual) or the unpadded one.
  {
    const auto& info = ckpt.info(prefix_emb);
    if (info.shape.size() == 2 && info.shape[1] == M && info.shape[0] != c.vocab_size &&
        info.shape[0] == c.unpadded_vocab_size) {
      c.vocab_size = c.unpadded_vocab_size;
    }
  }
  // Layers beyond n_layer mean config.json and the weights disagree.
  {
    static const std::regex kLayer(R"(^backbone\.layers\.(\d+)\.)");
    for (const auto& name : ckpt.names()) {
      std::smatch m;
      if (std::regex_search(name, m, kLayer) && std::stoll(m[1].str()) >= c.n_layer) {
        throw std::runtime_error(ckpt.description() + ": tensor " + name + " belongs to a layer beyond the " +
                                 std::to_string(c.n_layer) + " that config.json declares");
      }
    }
  }

  const at::TensorOptions compute = at::TensorOptions().dtype(options.dtype).device(options.device);
  const at::TensorOptions fp32 = at::TensorOptions().dtype(at::kFloat).device(options.device);
  auto get = [&](const std::string& name, std::vector<int64_t> shape, const at::TensorOptions& to) {
    const safetensors::File& file = ckpt.file_of(name);  // throws "...: tensor <name> is missing"
    const auto& info = file.info(name);
    if (info.shape != shape) {
      throw std::runtime_error(file.source() + ": tensor " + name + " has shape " + shape_string(info.shape) +
                               ", expected " + shape_string(shape) + " for the config (d_model " +
                               std::to_string(M) + ", d_inner " + std::to_string(D) + ", d_state " +
                               std::to_string(N) + ", dt_rank " + std::to_string(R) + ", d_conv " +
                               std::to_string(K) + ", vocab " + std::to_string(c.vocab_size) + ")");
    }
    if (info.dtype != "F32" && info.dtype != "F16" && info.dtype != "BF16" && info.dtype != "F64") {
      throw std::runtime_error(file.source() + ": tensor " + name + " has dtype " + info.dtype +
                               "; model weights must be F32, F16 or BF16");
    }
    return file.tensor(name, to.dtype().toScalarType()).to(to.device());
  };

  auto w = std::make_unique<Weights>();
  w->embedding = get(prefix_emb, {c.vocab_size, M}, compute);
  w->norm_f = get("backbone.norm_f.weight", {M}, fp32);
  if (c.tie_embeddings) {
    w->lm_head = w->embedding;
  } else {
    w->lm_head = get("lm_head.weight", {c.vocab_size, M}, compute);
  }
  w->layers.reserve(static_cast<size_t>(c.n_layer));
  const LayerWeightFetch fetch = [&](const std::string& name, const std::vector<int64_t>& shape,
                                     WeightPrecision precision) {
    return get(name, shape, precision == WeightPrecision::kFp32 ? fp32 : compute);
  };
  for (int64_t i = 0; i < c.n_layer; ++i) w->layers.push_back(split_layer_weights(c, i, fetch));
  model->weights_ = std::move(w);
  model->workspace_ = new_workspace();
  // Hashed under the Hugging Face names, so both spellings of one model share a fingerprint.
  std::map<std::string, std::string> rename;
  if (prefix_emb != "backbone.embeddings.weight") rename[prefix_emb] = "backbone.embeddings.weight";
  model->fingerprint_ = ModelFingerprint::of(c, ckpt.weights_sha256(rename));
  return model;
}

// ---------------------------------------------------------------------------------------------
namespace {

void check_rows(const at::Tensor& rows, int64_t B, const StateCache& cache, const char* what) {
  if (!rows.defined() || rows.dim() != 1 || rows.size(0) != B || rows.scalar_type() != at::kLong) {
    throw std::invalid_argument(std::string(what) + ": rows must be [B] int64");
  }
  // In range and unique (two batch rows on one cache row would race in the kernels). Rows already
  // on the device were built there by the caller; the CUDA kernels skip out-of-range ones.
  if (rows.device().is_cpu()) {
    const at::Tensor rc = rows.contiguous();
    const std::string bad = kernels::describe_bad_rows(rc.data_ptr<int64_t>(), B, cache.capacity());
    if (!bad.empty()) throw std::invalid_argument(std::string(what) + ": " + bad);
  }
}

// The slot count of the pool the adapters come from (0: no adapter tensor, no slot is read).
int64_t pool_slots(const AdapterPoolView& adapters) {
  for (const at::Tensor* t : {&adapters.state_offset, &adapters.output_offset, &adapters.initial_state}) {
    if (t->defined()) return t->size(0);
  }
  return 0;
}

void check_slots(const at::Tensor& slots, int64_t B, const AdapterPoolView& adapters, const char* what) {
  if (!slots.defined()) return;
  if (slots.dim() != 1 || slots.size(0) != B) {
    throw std::invalid_argument(std::string(what) + ": slots must be [B] int32");
  }
  const int64_t S = pool_slots(adapters);
  if (slots.device().is_cpu() && S > 0) {  // a slot outside the pool reads another tenant's adapter
    const at::Tensor sc = slots.to(at::kInt).contiguous();
    const std::string bad = kernels::describe_bad_slots(sc.data_ptr<int32_t>(), B, S);
    if (!bad.empty()) throw std::invalid_argument(std::string(what) + ": " + bad);
  }
}

// Checked slots as int32 on the device (undefined stays undefined: every row on the base model).
at::Tensor slots_on(const at::Tensor& slots, at::Device device) {
  if (!slots.defined() || (slots.scalar_type() == at::kInt && slots.device() == device)) return slots;
  return slots.to(device, at::kInt);
}

}  // namespace

// How one forward's tokens reach a layer's conv and scan: a padded [B, L] prompt (prefill, L > 0)
// or one token per row (decode, L = 0). Everything else a layer does is row-wise over its
// B * max(L, 1) tokens, so prefill and decode run the same layer body.
struct MambaModel::LayerBatch {
  int64_t B = 0, L = 0;
  at::Tensor lengths;  // [B] on the device (prefill)
  bool resume = false;  // prefill: continue from the cached states
  at::Tensor rows, slots;  // on the device
  const AdapterPoolView* adapters = nullptr;
  StateCache* cache = nullptr;

  bool decode() const { return L == 0; }
  int64_t tokens() const { return decode() ? B : B * L; }
  // The [B, L, width] (prefill) or [B, width] (decode) view of a [tokens, width] workspace tensor.
  at::Tensor per_row(const at::Tensor& t, int64_t width) const {
    return decode() ? t : t.view({B, L, width});
  }
  at::DimVector per_row_shape(int64_t width) const {
    return decode() ? at::DimVector{B, width} : at::DimVector{B, L, width};
  }
};

// The fp32 residual stream [T, M] for token ids [T] (on the device).
at::Tensor& MambaModel::embed(const at::Tensor& tokens, Workspace& ws) {
  const int64_t T = tokens.size(0), M = config_.d_model;
  const at::Device dev = options_.device;
  at::Tensor& hidden = fit(ws.hidden, {T, M}, at::TensorOptions().dtype(at::kFloat).device(dev));
  if (options_.dtype != at::kFloat) {
    at::index_select_out(fit(ws.emb, {T, M}, at::TensorOptions().dtype(options_.dtype).device(dev)),
                         weights_->embedding, 0, tokens);
    hidden.copy_(ws.emb);
  } else {
    at::index_select_out(hidden, weights_->embedding, 0, tokens);
  }
  return hidden;
}

void MambaModel::mamba_layer(int64_t i, const LayerBatch& batch, Workspace& ws, at::Tensor& hidden) {
  const MambaConfig& c = config_;
  const LayerWeights& l = weights_->layers[static_cast<size_t>(i)];
  const int64_t T = batch.tokens(), M = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank;
  const at::TensorOptions compute = at::TensorOptions().dtype(options_.dtype).device(options_.device);
  const bool bf16 = options_.dtype != at::kFloat;
  rmsnorm(hidden, l.norm, c.norm_eps, fit(ws.normed, {T, M}, compute));
  // One GEMM for in_proj and one for x_proj: the kernels and dt_proj read the parts as strided
  // views (unit inner stride), so splitting the weights costs launches, not copies, to undo.
  linear_out(fit(ws.xz, {T, 2 * D}, compute), ws.normed, l.in_proj, l.in_proj_b);
  const at::Tensor x = ws.xz.narrow(1, 0, D), z = ws.xz.narrow(1, D, D);
  kernels::LayerCache lc{batch.cache->conv.select(0, i), batch.cache->ssm.select(0, i), batch.rows};
  at::Tensor& xc = fit(ws.xc, batch.per_row_shape(D), compute);
  if (batch.decode()) {
    kernels::causal_conv1d_step(x, l.conv_w, l.conv_b, lc, xc);
  } else {
    kernels::causal_conv1d_prefill(x.view({batch.B, batch.L, D}), l.conv_w, l.conv_b,
                                   batch.lengths, lc, batch.resume, xc);
  }
  const at::Tensor xc2 = batch.decode() ? xc : xc.view({T, D});
  at::mm_out(fit(ws.dbc, {T, R + 2 * N}, compute), xc2, l.x_proj.t());
  const at::Tensor dt = ws.dbc.narrow(1, 0, R), Bm = ws.dbc.narrow(1, R, N),
                   Cm = ws.dbc.narrow(1, R + N, N);
  at::mm_out(fit(ws.delta, {T, D}, compute), dt, l.dt_w.t());
  at::Tensor& y = fit(ws.y, batch.per_row_shape(D), compute);
  const kernels::ScanArgs scan{/*x=*/xc, /*delta_in=*/batch.per_row(ws.delta, D),
                               /*delta_bias=*/l.dt_b, /*A=*/l.A, /*Bm=*/batch.per_row(Bm, N),
                               /*Cm=*/batch.per_row(Cm, N), /*Dskip=*/l.Dskip,
                               /*z=*/batch.per_row(z, D), /*lengths=*/batch.lengths,
                               /*adapters=*/batch.adapters->layer(i, batch.slots)};
  if (batch.decode()) {
    kernels::selective_scan_step(scan, lc, y);
  } else {
    kernels::selective_scan_prefill(scan, lc, batch.resume, y);
  }
  const at::Tensor y2 = batch.decode() ? y : y.reshape({T, D});
  if (bf16) {
    linear_out(fit(ws.o, {T, M}, compute), y2, l.out_w, l.out_b);
    hidden.add_(ws.o);
  } else {
    hidden.addmm_(y2, l.out_w.t());
    if (l.out_b.defined()) hidden.add_(l.out_b);
  }
}

at::Tensor MambaModel::prefill(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& rows,
                               const at::Tensor& slots, const AdapterPoolView& adapters, StateCache& cache,
                               bool resume, bool all_positions) {
  const MambaConfig& c = config_;
  const Weights& W = *weights_;
  Workspace& ws = *workspace_;
  if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != at::kLong) {
    throw std::invalid_argument("prefill: tokens must be [B, L] int64");
  }
  const int64_t B = tokens.size(0), L = tokens.size(1), T = B * L;
  const int64_t M = c.d_model, V = c.vocab_size;
  if (B == 0 || L == 0) throw std::invalid_argument("prefill: empty batch");
  if (!lengths.defined() || lengths.dim() != 1 || lengths.size(0) != B ||
      lengths.scalar_type() != at::kLong || !lengths.device().is_cpu()) {
    throw std::invalid_argument("prefill: lengths must be [B] int64 on the CPU");
  }
  const at::Tensor len = lengths.contiguous();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t l = len.data_ptr<int64_t>()[b];
    if (l < 1 || l > L) {
      throw std::invalid_argument("prefill: lengths[" + std::to_string(b) + "] = " + std::to_string(l) +
                                  " outside [1, " + std::to_string(L) + "]");
    }
  }
  check_rows(rows, B, cache, "prefill");
  {
    const auto mm = at::aminmax(tokens);
    const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
    if (lo < 0 || hi >= V) {
      throw std::invalid_argument("prefill: token ids must lie in [0, " + std::to_string(V) + "), got " +
                                  std::to_string(lo < 0 ? lo : hi));
    }
  }
  const at::Device dev = options_.device;
  const at::TensorOptions compute = at::TensorOptions().dtype(options_.dtype).device(dev);
  const at::TensorOptions fp32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  const bool bf16 = options_.dtype != at::kFloat;
  const at::Tensor tok = tokens.to(dev).reshape({T});
  const at::Tensor rows_dev = rows.to(dev);
  check_slots(slots, B, adapters, "prefill");
  const at::Tensor slot_dev = slots_on(slots, dev);
  // Validated above; on the device once per forward, not copied again by every layer's kernels.
  const at::Tensor len_dev = len.to(dev);

  at::Tensor& hidden = embed(tok, ws);
  LayerBatch batch;
  batch.B = B, batch.L = L, batch.lengths = len_dev, batch.resume = resume;
  batch.rows = rows_dev, batch.slots = slot_dev, batch.adapters = &adapters, batch.cache = &cache;
  for (int64_t i = 0; i < c.n_layer; ++i) mamba_layer(i, batch, ws, hidden);

  if (all_positions) {
    at::Tensor normed = fit(ws.normed, {T, M}, compute);
    rmsnorm(hidden, W.norm_f, c.norm_eps, normed);
    if (bf16) return at::mm(normed, W.lm_head.t()).to(at::kFloat).view({B, L, V});
    at::Tensor logits = at::empty({T, V}, fp32);
    at::mm_out(logits, normed, W.lm_head.t());
    return logits.view({B, L, V});
  }
  // Each row's last valid position: b * L + lengths[b] - 1.
  at::Tensor idx = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  for (int64_t b = 0; b < B; ++b) idx.data_ptr<int64_t>()[b] = b * L + len.data_ptr<int64_t>()[b] - 1;
  at::Tensor& last = fit(ws.last, {B, M}, fp32);
  at::index_select_out(last, hidden, 0, idx.to(dev));
  at::Tensor& last_normed = fit(ws.last_normed, {B, M}, compute);
  rmsnorm(last, W.norm_f, c.norm_eps, last_normed);
  if (bf16) return at::mm(last_normed, W.lm_head.t()).to(at::kFloat);
  at::Tensor logits = at::empty({B, V}, fp32);
  at::mm_out(logits, last_normed, W.lm_head.t());
  return logits;
}

void MambaModel::check_decode_inputs(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                                     const AdapterPoolView& adapters, const StateCache& cache) const {
  if (!tokens.defined() || tokens.dim() != 1 || tokens.scalar_type() != at::kLong) {
    throw std::invalid_argument("decode: tokens must be [B] int64");
  }
  const int64_t B = tokens.size(0), V = config_.vocab_size;
  if (B == 0) throw std::invalid_argument("decode: empty batch");
  check_rows(rows, B, cache, "decode");
  if (tokens.device().is_cpu()) {
    const at::Tensor t = tokens.contiguous();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t id = t.data_ptr<int64_t>()[b];
      if (id < 0 || id >= V) {
        throw std::invalid_argument("decode: token id " + std::to_string(id) + " outside [0, " +
                                    std::to_string(V) + ")");
      }
    }
  }
  check_slots(slots, B, adapters, "decode");
}

at::Tensor MambaModel::decode(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                              const AdapterPoolView& adapters, StateCache& cache, at::Tensor* logits_out) {
  check_decode_inputs(tokens, rows, slots, adapters, cache);
  const int64_t B = tokens.size(0);
  const at::Device dev = options_.device;
  const at::Tensor tok = tokens.device() == dev ? tokens : tokens.to(dev);
  const at::Tensor rows_dev = rows.device() == dev ? rows : rows.to(dev);
  const at::Tensor slot_dev = slots_on(slots, dev);
  at::Tensor fresh;
  at::Tensor& logits = logits_out != nullptr ? *logits_out : fresh;
  fit(logits, {B, config_.vocab_size}, at::TensorOptions().dtype(at::kFloat).device(dev));
  decode_into(tok, rows_dev, slot_dev, adapters, cache, *workspace_, logits);
  return logits;
}

void MambaModel::decode_into(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                             const AdapterPoolView& adapters, StateCache& cache, Workspace& ws,
                             at::Tensor& logits) {
  const MambaConfig& c = config_;
  const Weights& W = *weights_;
  const int64_t B = tokens.size(0), M = c.d_model, V = c.vocab_size;
  const at::TensorOptions compute = at::TensorOptions().dtype(options_.dtype).device(options_.device);
  at::Tensor& hidden = embed(tokens, ws);
  LayerBatch batch;
  batch.B = B, batch.rows = rows, batch.slots = slots, batch.adapters = &adapters;
  batch.cache = &cache;
  for (int64_t i = 0; i < c.n_layer; ++i) mamba_layer(i, batch, ws, hidden);
  at::Tensor& normed = fit(ws.normed, {B, M}, compute);
  rmsnorm(hidden, W.norm_f, c.norm_eps, normed);
  if (options_.dtype != at::kFloat) {
    at::mm_out(fit(ws.logits_c, {B, V}, compute), normed, W.lm_head.t());
    logits.copy_(ws.logits_c);
  } else {
    at::mm_out(logits, normed, W.lm_head.t());
  }
}

}  // namespace statetune::engine
