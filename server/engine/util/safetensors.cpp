#include "server/engine/util/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "server/engine/util/bounded_json.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/sha256.h"

namespace statetune::engine::safetensors {
namespace {

// Real headers are at most a few MB (one entry per tensor); this bounds what a bad file can make us
// allocate before anything else is checked.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// A header nests 3 deep (header, tensor entry, shape); a deeper one is not safetensors, and bounding
// it before parsing keeps a hostile file from exhausting the stack.
constexpr int kMaxHeaderDepth = 8;
// model.safetensors.index.json: a weight_map of a few thousand names, and metadata.
constexpr JsonLimits kShardIndexLimits{size_t{16} << 20, 8};

size_t element_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") {
    return 1;
  }
  return 0;
}

std::string errno_text() { return std::strerror(errno); }

// The bytes of a file: a read-only mapping, a string for parse(), or the caller's for parse_borrowed().
struct Buffer {
  std::string owned;
  void* map = nullptr;
  size_t map_size = 0;
  const char* data = nullptr;
  size_t size = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (map != nullptr) munmap(map, map_size);
  }
};

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

at::ScalarType scalar_type_of(const std::string& dtype) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "F64") return at::kDouble;
  if (dtype == "I64") return at::kLong;
  if (dtype == "I32") return at::kInt;
  if (dtype == "I16") return at::kShort;
  if (dtype == "I8") return at::kChar;
  if (dtype == "U8") return at::kByte;
  if (dtype == "BOOL") return at::kBool;
  throw std::invalid_argument("safetensors dtype " + dtype + " is not supported");
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default:
      throw std::invalid_argument(std::string("no safetensors dtype for ") + c10::toString(type));
  }
}

std::string shape_string(at::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
struct File::Impl {
  std::string source;
  Buffer buffer;
  const char* data = nullptr;  // the data section
  size_t data_size = 0;
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorInfo> tensors;

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error(source + ": not a valid safetensors file: " + msg);
  }

  void parse() {
    const char* p = buffer.data;
    const size_t size = buffer.size;
    if (size < 8) fail("shorter than its 8-byte header size (" + std::to_string(size) + " bytes)");
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(p[i]);
    if (header_size > kMaxHeaderBytes || header_size > size - 8) {
      fail("header size " + std::to_string(header_size) + " exceeds the file (" + std::to_string(size) +
           " bytes); the file is truncated or not safetensors");
    }
    nlohmann::json header;
    try {
      header = parse_bounded_json(std::string_view(p + 8, header_size),
                                  JsonLimits{static_cast<size_t>(kMaxHeaderBytes), kMaxHeaderDepth}, "the header");
    } catch (const JsonInputError& e) {
      fail(e.what());
    }
    if (!header.is_object()) fail("header is not a JSON object");
    data = p + 8 + header_size;
    data_size = size - 8 - header_size;

    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        if (!value.is_object()) fail("__metadata__ is not an object");
        for (const auto& [k, v] : value.items()) {
          if (!v.is_string()) fail("__metadata__." + k + " is not a string");
          metadata[k] = v.get<std::string>();
        }
        continue;
      }
      TensorInfo t;
      try {
        if (!value.is_object()) fail(name + ": entry is not an object");
        t.dtype = value.at("dtype").get<std::string>();
        const auto& shape = value.at("shape");
        if (!shape.is_array()) fail(name + ": shape must be an array");
        for (const auto& d : shape) t.shape.push_back(json_int64(d, name + ": a shape entry"));
        const auto& offsets = value.at("data_offsets");
        if (!offsets.is_array() || offsets.size() != 2) fail(name + ": data_offsets must be [begin, end]");
        t.begin = json_uint64(offsets[0], name + ": data_offsets[0]");
        t.end = json_uint64(offsets[1], name + ": data_offsets[1]");
      } catch (const nlohmann::json::exception& e) {
        fail(name + ": malformed entry (" + e.what() + ")");
      } catch (const JsonInputError& e) {
        fail(e.what());
      }
      const size_t esize = element_size(t.dtype);
      if (esize == 0) fail(name + ": unknown dtype " + t.dtype);
      uint64_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0 || (d > 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / static_cast<uint64_t>(d))) {
          fail(name + ": invalid shape " + shape_string(t.shape));
        }
        numel *= static_cast<uint64_t>(d);
      }
      if (t.end < t.begin || t.end > data_size) {
        fail(name + ": data range [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
             ") lies outside the " + std::to_string(data_size) + " data bytes (truncated file?)");
      }
      if (t.end - t.begin != numel * esize) {
        fail(name + ": " + std::to_string(t.end - t.begin) + " bytes do not match " + t.dtype + " of " +
             std::to_string(numel) + " elements " + shape_string(t.shape));
      }
      if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
      tensors.emplace(name, std::move(t));
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].second) {
        fail("tensors overlap in the data section at byte " + std::to_string(ranges[i].first));
      }
    }
  }
};

File File::open(const std::filesystem::path& path) {
  auto impl = std::make_shared<Impl>();
  impl->source = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(impl->source + ": cannot open: " + errno_text());
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const std::string err = errno_text();
    ::close(fd);
    throw std::runtime_error(impl->source + ": cannot stat: " + err);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size >= 8) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const std::string err = errno_text();
      ::close(fd);
      throw std::runtime_error(impl->source + ": cannot map: " + err);
    }
    impl->buffer.map = m;
    impl->buffer.map_size = size;
    impl->buffer.data = static_cast<const char*>(m);
    impl->buffer.size = size;
  } else {
    impl->buffer.data = "";
    impl->buffer.size = size;
  }
  ::close(fd);
  impl->parse();
  File f;
  f.impl_ = std::move(impl);
  return f;
}

File File::parse(std::string bytes, const std::string& source) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  impl->buffer.owned = std::move(bytes);
  impl->buffer.data = impl->buffer.owned.data();
  impl->buffer.size = impl->buffer.owned.size();
  impl->parse();
  File f;
  f.impl_ = std::move(impl);
  return f;
}

File File::parse_borrowed(std::string_view bytes, const std::string& source) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  impl->buffer.data = bytes.data();
  impl->buffer.size = bytes.size();
  impl->parse();
  File f;
  f.impl_ = std::move(impl);
  return f;
}

const std::string& File::source() const { return impl_->source; }
const std::map<std::string, std::string>& File::metadata() const { return impl_->metadata; }
const std::map<std::string, TensorInfo>& File::tensors() const { return impl_->tensors; }
bool File::contains(const std::string& name) const { return impl_->tensors.count(name) > 0; }

const TensorInfo& File::info(const std::string& name) const {
  auto it = impl_->tensors.find(name);
  if (it == impl_->tensors.end()) {
    throw std::runtime_error(impl_->source + ": tensor " + name + " is missing");
  }
  return it->second;
}

std::string_view File::bytes(const std::string& name) const {
  const TensorInfo& t = info(name);
  return std::string_view(impl_->data + t.begin, t.end - t.begin);
}

at::Tensor File::tensor(const std::string& name) const {
  const TensorInfo& t = info(name);
  at::ScalarType stored;
  try {
    stored = scalar_type_of(t.dtype);
  } catch (const std::invalid_argument&) {
    throw std::runtime_error(impl_->source + ": tensor " + name + " has dtype " + t.dtype +
                             ", which this reader does not convert");
  }
  // A copy into aligned memory: the data section need not be aligned, and the mapping is read-only.
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(stored));
  if (t.end > t.begin) std::memcpy(out.data_ptr(), impl_->data + t.begin, t.end - t.begin);
  return out;
}

at::Tensor File::tensor(const std::string& name, at::ScalarType dtype) const {
  at::Tensor t = tensor(name);
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

// ---------------------------------------------------------------------------------------------
bool Checkpoint::exists_in(const std::filesystem::path& dir) {
  return std::filesystem::exists(dir / "model.safetensors") ||
         std::filesystem::exists(dir / "model.safetensors.index.json");
}

Checkpoint Checkpoint::open(const std::filesystem::path& dir) {
  Checkpoint c;
  c.dir_ = dir;
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(single)) {
    c.files_.push_back(File::open(single));
    for (const auto& [name, t] : c.files_[0].tensors()) c.file_index_[name] = 0;
    return c;
  }
  if (!std::filesystem::exists(index)) {
    throw std::runtime_error(dir.string() + ": no model.safetensors or model.safetensors.index.json");
  }
  const std::string src = index.string();
  nlohmann::json j;
  {
    const std::string text = read_file(index, kShardIndexLimits.max_bytes);
    try {
      j = parse_bounded_json(text, kShardIndexLimits, src);
    } catch (const JsonInputError& e) {
      throw std::runtime_error(e.what());
    }
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    throw std::runtime_error(src + ": has no \"weight_map\" object");
  }
  std::map<std::string, size_t> shard_of_file;
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw std::runtime_error(src + ": weight_map." + name + " is not a string");
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
      throw std::runtime_error(src + ": weight_map." + name + " names an invalid shard '" + f + "'");
    }
    weight_map[name] = f;
    if (shard_of_file.count(f) == 0) {
      shard_of_file[f] = c.files_.size();
      c.files_.push_back(File::open(dir / f));
    }
  }
  for (size_t i = 0; i < c.files_.size(); ++i) {
    for (const auto& [name, t] : c.files_[i].tensors()) {
      if (c.file_index_.count(name)) {
        throw std::runtime_error(src + ": tensor " + name + " is in two shards: " +
                                 c.files_[c.file_index_[name]].source() + " and " + c.files_[i].source());
      }
      c.file_index_[name] = i;
    }
  }
  for (const auto& [name, f] : weight_map) {
    auto it = c.file_index_.find(name);
    if (it == c.file_index_.end() || c.files_[it->second].source() != (dir / f).string()) {
      throw std::runtime_error(src + ": weight_map says tensor " + name + " is in " + f +
                               ", but that shard does not hold it");
    }
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(file_index_.size());
  for (const auto& [name, i] : file_index_) out.push_back(name);
  return out;
}

bool Checkpoint::contains(const std::string& name) const { return file_index_.count(name) > 0; }

std::string Checkpoint::description() const {
  if (files_.size() == 1) return files_[0].source();
  return (dir_ / "model.safetensors.index.json").string() + " (" + std::to_string(files_.size()) +
         " shards)";
}

const File& Checkpoint::file_of(const std::string& name) const {
  auto it = file_index_.find(name);
  if (it == file_index_.end()) {
    throw std::runtime_error(description() + ": tensor " + name + " is missing");
  }
  return files_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const { return file_of(name).info(name); }

at::Tensor Checkpoint::tensor(const std::string& name, at::ScalarType dtype) const {
  return file_of(name).tensor(name, dtype);
}

std::string Checkpoint::weights_sha256(const std::map<std::string, std::string>& rename) const {
  std::vector<HashEntry> list;
  for (const auto& [name, i] : file_index_) {
    auto it = rename.find(name);
    list.push_back({it == rename.end() ? name : it->second, &files_[i], name});
  }
  std::sort(list.begin(), list.end(),
            [](const HashEntry& a, const HashEntry& b) { return a.hashed_name < b.hashed_name; });
  return tensors_sha256(list);
}

std::string tensors_sha256(const std::vector<HashEntry>& entries) {
  Sha256 h;
  const char nul = '\0';
  for (const HashEntry& e : entries) {
    const TensorInfo& t = e.file->info(e.stored_name);
    h.update(e.hashed_name);
    h.update(&nul, 1);
    h.update(t.dtype);
    h.update(&nul, 1);
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t.shape[i]);
    h.update(shape);
    h.update(&nul, 1);
    const uint64_t n = t.end - t.begin;
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    h.update(len, 8);
    const std::string_view bytes = e.file->bytes(e.stored_name);
    h.update(bytes.data(), bytes.size());
  }
  return h.hex_digest();
}

// ---------------------------------------------------------------------------------------------
namespace {

struct Prepared {
  std::string header;  // including the 8-byte size prefix and padding
  std::vector<at::Tensor> cpu;  // contiguous CPU tensors in name order
};

Prepared prepare(const std::map<std::string, at::Tensor>& tensors,
                 const std::map<std::string, std::string>& metadata) {
  Prepared out;
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || name.empty()) {
      throw std::invalid_argument("safetensors: invalid tensor name '" + name + "'");
    }
    if (!t.defined()) throw std::invalid_argument("safetensors: tensor " + name + " is undefined");
    const std::string dtype = dtype_name(t.scalar_type());
    at::Tensor c = t.to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    out.cpu.push_back(std::move(c));
  }
  std::string json = header.dump();
  // The format pads the header with spaces so the data starts 8-byte aligned.
  json.append((8 - json.size() % 8) % 8, ' ');
  const uint64_t header_size = json.size();
  out.header.reserve(8 + json.size());
  for (int i = 0; i < 8; ++i) out.header.push_back(static_cast<char>((header_size >> (8 * i)) & 0xff));
  out.header += json;
  return out;
}

}  // namespace

std::string encode(const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  Prepared p = prepare(tensors, metadata);
  std::string out = std::move(p.header);
  for (const at::Tensor& t : p.cpu) {
    out.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return out;
}

void write_file(const std::filesystem::path& path, const std::map<std::string, at::Tensor>& tensors,
                const std::map<std::string, std::string>& metadata) {
  const Prepared p = prepare(tensors, metadata);
  // Streamed tensor by tensor: a checkpoint is never copied into one buffer.
  write_file_durably(path, [&p](FileSink& out) {
    out.write(p.header);
    for (const at::Tensor& t : p.cpu) out.write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  });
}

}  // namespace statetune::engine::safetensors
