#include "server/engine/adapters/adapter.h"

#include <ATen/CPUGeneratorImpl.h>

#include <ctime>
#include <map>

#include <algorithm>
#include <chrono>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "server/engine/util/durable_file.h"
#include "server/engine/util/bounded_json.h"
#include "server/engine/util/safetensors.h"

namespace statetune::engine {
namespace {

const std::vector<std::string>& all_methods() {
  static const std::vector<std::string> kAll = {kStateOffset, kOutputOffset, kInitialState};
  return kAll;
}

// The per-layer shape of one method's tensor: [D, N] or [D].
std::vector<int64_t> layer_shape(const std::string& method, int64_t d_inner, int64_t d_state) {
  if (method == kOutputOffset) return {d_inner};
  return {d_inner, d_state};
}

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

const at::Tensor& tensor_of(const Adapter& a, const std::string& method) {
  if (method == kStateOffset) return a.state_offset;
  if (method == kOutputOffset) return a.output_offset;
  return a.initial_state;
}

at::Tensor& tensor_of(Adapter& a, const std::string& method) {
  if (method == kStateOffset) return a.state_offset;
  if (method == kOutputOffset) return a.output_offset;
  return a.initial_state;
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Adapter make_adapter(const MambaConfig& config, const ModelFingerprint& base,
                     const std::vector<std::string>& methods,
                     const std::function<at::Tensor(std::vector<int64_t>)>& fill) {
  Adapter a;
  a.methods = normalize_methods(methods);
  if (a.methods.empty()) throw std::invalid_argument("an adapter needs at least one method");
  a.base = base;
  a.created_unix = now_unix();
  for (const auto& m : a.methods) {
    std::vector<int64_t> shape = layer_shape(m, config.d_inner, config.d_state);
    shape.insert(shape.begin(), config.n_layer);
    tensor_of(a, m) = fill(shape);
  }
  return a;
}

}  // namespace

std::vector<std::string> normalize_methods(const std::vector<std::string>& methods) {
  for (const auto& m : methods) {
    if (std::find(all_methods().begin(), all_methods().end(), m) == all_methods().end()) {
      throw std::invalid_argument("unknown adapter method '" + m +
                                  "'; valid: state_offset, output_offset, initial_state");
    }
  }
  std::vector<std::string> out;
  for (const auto& m : all_methods()) {
    if (std::find(methods.begin(), methods.end(), m) != methods.end()) out.push_back(m);
  }
  return out;
}

std::vector<std::string> parse_methods(const std::string& comma_list) {
  std::vector<std::string> parts;
  std::string current;
  for (char c : comma_list) {
    if (c == ',') {
      if (!current.empty()) parts.push_back(current);
      current.clear();
    } else if (c != ' ') {
      current += c;
    }
  }
  if (!current.empty()) parts.push_back(current);
  return normalize_methods(parts);
}

std::string join_methods(const std::vector<std::string>& methods) {
  std::string out;
  for (const auto& m : methods) out += (out.empty() ? "" : ",") + m;
  return out;
}

bool Adapter::has(const std::string& method) const {
  return std::find(methods.begin(), methods.end(), method) != methods.end();
}

int64_t Adapter::parameter_count() const {
  int64_t n = 0;
  for (const auto& m : methods) {
    const at::Tensor& t = tensor_of(*this, m);
    if (t.defined()) n += t.numel();
  }
  return n;
}

void validate_adapter(const Adapter& adapter, const std::string& source) {
  auto fail = [&](const std::string& msg) { throw std::runtime_error(source + ": " + msg); };
  std::vector<std::string> canonical;
  try {
    canonical = normalize_methods(adapter.methods);
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  if (canonical.empty()) fail("no adapter methods (want any of state_offset, output_offset, initial_state)");
  const int64_t L = adapter.base.n_layer, D = adapter.base.d_inner, N = adapter.base.d_state;
  if (L <= 0 || D <= 0 || N <= 0) fail("the base fingerprint has no model dimensions");
  for (const auto& m : all_methods()) {
    const at::Tensor& t = tensor_of(adapter, m);
    const bool listed = adapter.has(m);
    if (!listed) {
      if (t.defined()) fail(m + " tensor present but '" + m + "' is not in the methods list");
      continue;
    }
    if (!t.defined()) fail("method " + m + " is listed but its tensor is missing");
    std::vector<int64_t> want = layer_shape(m, D, N);
    want.insert(want.begin(), L);
    if (t.sizes() != at::IntArrayRef(want)) {
      fail(m + " has shape " + shape_string(t.sizes()) + ", the base model needs " +
           shape_string(want) + " (n_layer, d_inner" + (m == kOutputOffset ? "" : ", d_state") + ")");
    }
    if (t.scalar_type() != at::kFloat) fail(m + " must be fp32 in memory");
    if (!at::isfinite(t).all().item<bool>()) fail(m + " contains NaN or Inf values");
  }
}

void check_compatible(const Adapter& adapter, const ModelFingerprint& base) {
  const std::string diff = adapter.base.mismatch(base);
  if (!diff.empty()) {
    throw std::runtime_error("adapter '" + adapter.name + "' (version '" + adapter.version +
                             "') was trained for a different base model: " + diff +
                             "; train or convert it for the model being served");
  }
}

Adapter zero_adapter(const MambaConfig& config, const ModelFingerprint& base,
                     const std::vector<std::string>& methods) {
  return make_adapter(config, base, methods,
                      [](std::vector<int64_t> shape) { return at::zeros(shape, at::kFloat); });
}

Adapter random_adapter(const MambaConfig& config, const ModelFingerprint& base,
                       const std::vector<std::string>& methods, uint64_t seed, double scale) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return make_adapter(config, base, methods, [&](std::vector<int64_t> shape) {
    return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).mul_(scale);
  });
}

int64_t trainable_parameter_count(const std::vector<std::string>& methods, const MambaConfig& config) {
  int64_t n = 0;
  for (const auto& m : normalize_methods(methods)) {
    n += config.n_layer * (m == kOutputOffset ? config.d_inner : config.d_inner * config.d_state);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// The file format.

namespace {

std::string tensor_name(int64_t layer, const std::string& method) {
  return "layers." + std::to_string(layer) + "." + method;
}

std::string iso8601_utc(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string encode_adapter(const Adapter& adapter, at::ScalarType disk_dtype) {
  if (disk_dtype != at::kFloat && disk_dtype != at::kBFloat16) {
    throw std::invalid_argument("adapter files are stored as fp32 or bf16, not " +
                                std::string(c10::toString(disk_dtype)));
  }
  validate_adapter(adapter, "adapter '" + adapter.name + "'");
  std::map<std::string, at::Tensor> tensors;
  for (const auto& m : adapter.methods) {
    const at::Tensor& all_layers = tensor_of(adapter, m);
    for (int64_t i = 0; i < all_layers.size(0); ++i) {
      tensors[tensor_name(i, m)] = all_layers.select(0, i).to(at::kCPU, disk_dtype).contiguous();
    }
  }
  const int64_t created = adapter.created_unix > 0 ? adapter.created_unix : now_unix();
  const std::map<std::string, std::string> metadata = {
      {"format", kAdapterFormatTag},
      {"format_version", std::to_string(kAdapterFormatVersion)},
      {"methods", join_methods(adapter.methods)},
      {"base", adapter.base.to_json().dump()},
      {"created_unix", std::to_string(created)},
      {"created_iso", iso8601_utc(created)},
      {"name", adapter.name},
      {"version", adapter.version},
      {"extra", adapter.extra_metadata.is_null() ? "{}" : adapter.extra_metadata.dump()},
  };
  return safetensors::encode(tensors, metadata);
}

void save_adapter(const Adapter& adapter, const std::filesystem::path& path, at::ScalarType disk_dtype) {
  std::string bytes;
  try {
    bytes = encode_adapter(adapter, disk_dtype);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(e.what()) + " (not written to " + path.string() + ")");
  }
  write_file_durably(path, bytes);
}

namespace {

// The metadata values that hold JSON. A fingerprint is one flat object; `extra` (training
// configuration, eval results) nests a few levels. Both limits are far above what statetune writes
// and far below where nlohmann's recursion (copy, dump, destruction) would exhaust the stack.
constexpr JsonLimits kBaseMetadataLimits{64 << 10, 4};
constexpr JsonLimits kExtraMetadataLimits{16 << 20, 64};

Adapter adapter_from_file(const safetensors::File& file) {
  const std::string& source = file.source();
  auto fail = [&](const std::string& msg) -> void { throw std::runtime_error(source + ": " + msg); };
  const auto& meta = file.metadata();
  auto field = [&](const std::string& key) -> std::string {
    auto it = meta.find(key);
    if (it == meta.end()) fail("metadata key '" + key + "' is missing; not a statetune adapter file?");
    return it->second;
  };

  const auto tag = meta.find("format");
  if (tag == meta.end() || tag->second != kAdapterFormatTag) {
    fail(std::string("not a statetune adapter: metadata 'format' is '") +
         (tag == meta.end() ? "" : tag->second) + "', expected '" + kAdapterFormatTag + "'");
  }
  if (field("format_version") != std::to_string(kAdapterFormatVersion)) {
    fail("unsupported format_version '" + field("format_version") + "' (this build reads " +
         std::to_string(kAdapterFormatVersion) + "); upgrade statetune");
  }

  Adapter a;
  const std::string methods = field("methods");
  try {
    a.methods = parse_methods(methods);
  } catch (const std::invalid_argument& e) {
    fail(std::string("metadata 'methods': ") + e.what());
  }
  if (a.methods.empty()) fail("metadata 'methods' is empty");
  const std::string base = field("base");
  try {
    a.base = ModelFingerprint::from_json(parse_bounded_json(base, kBaseMetadataLimits, "metadata 'base'"));
  } catch (const JsonInputError& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(std::string("metadata 'base' is not a model fingerprint: ") + e.what());
  }
  auto name_it = meta.find("name");
  if (name_it != meta.end()) a.name = name_it->second;
  auto version_it = meta.find("version");
  if (version_it != meta.end()) a.version = version_it->second;
  auto created_it = meta.find("created_unix");
  if (created_it != meta.end()) {
    try {
      a.created_unix = std::stoll(created_it->second);
    } catch (const std::exception&) {
      fail("metadata 'created_unix' is not an integer: '" + created_it->second + "'");
    }
  }
  auto extra_it = meta.find("extra");
  if (extra_it != meta.end()) {
    try {
      a.extra_metadata = parse_bounded_json(extra_it->second, kExtraMetadataLimits, "metadata 'extra'");
    } catch (const JsonInputError& e) {
      fail(e.what());
    }
  }

  const int64_t L = a.base.n_layer, D = a.base.d_inner, N = a.base.d_state;
  if (L <= 0 || D <= 0 || N <= 0) fail("metadata 'base' has no model dimensions");
  // Every tensor must be one the methods and the base's layer count call for, and vice versa.
  std::map<std::string, std::pair<std::string, int64_t>> expected;  // name -> (method, layer)
  for (const auto& m : a.methods) {
    for (int64_t i = 0; i < L; ++i) expected[tensor_name(i, m)] = {m, i};
  }
  for (const auto& [name, t] : file.tensors()) {
    if (expected.count(name) == 0) {
      fail("unexpected tensor " + name + " (methods " + join_methods(a.methods) + ", " +
           std::to_string(L) + " layers)");
    }
  }
  std::map<std::string, std::vector<at::Tensor>> layers;
  for (const auto& [name, what] : expected) {
    const auto& [method, layer] = what;
    auto it = file.tensors().find(name);
    if (it == file.tensors().end()) {
      fail("tensor " + name + " is missing: method " + method + " needs one tensor for each of the " +
           std::to_string(L) + " layers");
    }
    const std::vector<int64_t> want = layer_shape(method, D, N);
    if (it->second.shape != want) {
      fail("tensor " + name + " has shape " + shape_string(it->second.shape) + ", expected " +
           shape_string(want) + " for the base model (d_inner " + std::to_string(D) + ", d_state " +
           std::to_string(N) + ")");
    }
    if (it->second.dtype != "F32" && it->second.dtype != "BF16") {
      fail("tensor " + name + " has dtype " + it->second.dtype + "; adapter tensors must be F32 or BF16");
    }
    at::Tensor t = file.tensor(name, at::kFloat);
    if (!at::isfinite(t).all().item<bool>()) fail("tensor " + name + " contains NaN or Inf values");
    auto& per_layer = layers[method];
    if (per_layer.empty()) per_layer.resize(static_cast<size_t>(L));
    per_layer[static_cast<size_t>(layer)] = std::move(t);
  }
  for (auto& [method, per_layer] : layers) tensor_of(a, method) = at::stack(per_layer);
  validate_adapter(a, source);
  return a;
}

}  // namespace

Adapter load_adapter(const std::filesystem::path& path) {
  return adapter_from_file(safetensors::File::parse(read_file(path), path.string()));
}

Adapter parse_adapter(std::string_view bytes, const std::string& source) {
  return adapter_from_file(safetensors::File::parse_borrowed(bytes, source));
}

}  // namespace statetune::engine
