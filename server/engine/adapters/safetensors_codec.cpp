#include "server/engine/adapters/safetensors_codec.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <limits>
#include <stdexcept>

namespace statetune::engine::safetensors_codec {
namespace {

// Adapter headers are a few KB; anything near this is not an adapter file.
constexpr uint64_t kMaxHeaderBytes = uint64_t{16} << 20;

size_t element_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

}  // namespace

std::string encode(const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const char* dtype = t.scalar_type() == at::kFloat      ? "F32"
                        : t.scalar_type() == at::kBFloat16 ? "BF16"
                                                           : nullptr;
    if (dtype == nullptr || !t.is_contiguous() || !t.device().is_cpu()) {
      throw std::invalid_argument("safetensors encode: " + name +
                                  " must be a contiguous CPU F32 or BF16 tensor");
    }
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string json = header.dump();
  // The format pads the header with spaces so the data starts 8-byte aligned.
  json.append((8 - json.size() % 8) % 8, ' ');
  const uint64_t header_size = json.size();
  std::string out;
  out.reserve(8 + json.size() + offset);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((header_size >> (8 * i)) & 0xff));
  out += json;
  for (const auto& [name, t] : tensors) {
    out.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return out;
}

Decoded decode(std::string file, const std::string& source) {
  auto fail = [&](const std::string& msg) -> void {
    throw std::runtime_error(source + ": not a valid safetensors file: " + msg);
  };
  if (file.size() < 8) fail("shorter than its 8-byte header size (" + std::to_string(file.size()) + " bytes)");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(file[i]);
  if (header_size > kMaxHeaderBytes || header_size > file.size() - 8) {
    fail("header size " + std::to_string(header_size) + " exceeds the file (" +
         std::to_string(file.size()) + " bytes); the file is truncated or not safetensors");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + static_cast<ptrdiff_t>(header_size));
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("header is not JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");

  Decoded out;
  out.data = file.substr(8 + header_size);
  file.clear();
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) fail("__metadata__." + k + " is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    DecodedTensor t;
    try {
      t.dtype = value.at("dtype").get<std::string>();
      t.shape = value.at("shape").get<std::vector<int64_t>>();
      const auto& offsets = value.at("data_offsets");
      if (!offsets.is_array() || offsets.size() != 2) fail(name + ": data_offsets must be [begin, end]");
      t.begin = offsets[0].get<size_t>();
      t.end = offsets[1].get<size_t>();
    } catch (const nlohmann::json::exception& e) {
      fail(name + ": malformed entry (" + e.what() + ")");
    }
    const size_t esize = element_size(t.dtype);
    if (esize == 0) fail(name + ": unknown dtype " + t.dtype);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || (d > 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))) {
        fail(name + ": invalid shape");
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (t.end < t.begin || t.end > out.data.size()) {
      fail(name + ": data range [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           ") lies outside the " + std::to_string(out.data.size()) + " data bytes (truncated file?)");
    }
    if (t.end - t.begin != numel * esize) {
      fail(name + ": " + std::to_string(t.end - t.begin) + " bytes do not match " + t.dtype +
           " of " + std::to_string(numel) + " elements");
    }
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

at::Tensor to_float(const Decoded& file, const std::string& name, const std::string& source) {
  const DecodedTensor& t = file.tensors.at(name);
  at::ScalarType type;
  if (t.dtype == "F32") {
    type = at::kFloat;
  } else if (t.dtype == "BF16") {
    type = at::kBFloat16;
  } else {
    throw std::runtime_error(source + ": " + name + " has dtype " + t.dtype +
                             "; adapter tensors must be F32 or BF16");
  }
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(type));
  std::memcpy(out.data_ptr(), file.data.data() + t.begin, t.end - t.begin);
  return type == at::kFloat ? out : out.to(at::kFloat);
}

}  // namespace statetune::engine::safetensors_codec
