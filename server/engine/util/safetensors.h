// The safetensors format (https://github.com/huggingface/safetensors): reading model checkpoints and
// adapter files, writing them.
//   file   = u64 little-endian header size | JSON header | data section
//   header = {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//             "__metadata__": {string: string}}   (offsets relative to the data section)
// Readers check every offset, size and dtype against the file before touching data, so a truncated or
// hostile file gives a std::runtime_error naming the file and the problem, never a crash.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace statetune::engine::safetensors {

struct TensorInfo {
  std::string dtype;  // "F32", "F16", "BF16", "I64", ... as in the header
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section
  int64_t numel() const;
};

// "F32" <-> at::kFloat etc. for the dtypes this reader converts: F64, F32, F16, BF16, I64, I32,
// I16, I8, U8, BOOL. scalar_type_of throws std::invalid_argument for the others.
at::ScalarType scalar_type_of(const std::string& dtype);
std::string dtype_name(at::ScalarType type);  // throws std::invalid_argument
// "[2, 3]"
std::string shape_string(at::IntArrayRef shape);

// One parsed safetensors file. Files opened from disk are memory-mapped read-only; copies of a File
// share the mapping.
class File {
 public:
  static File open(const std::filesystem::path& path);
  // Parses bytes held in memory; `source` names the buffer in error messages.
  static File parse(std::string bytes, const std::string& source);
  // Parses bytes without copying them: the caller keeps `bytes` alive while the File (or a copy) lives.
  static File parse_borrowed(std::string_view bytes, const std::string& source);

  const std::string& source() const;
  const std::map<std::string, std::string>& metadata() const;
  const std::map<std::string, TensorInfo>& tensors() const;
  bool contains(const std::string& name) const;
  // Throws std::runtime_error "<source>: tensor <name> is missing".
  const TensorInfo& info(const std::string& name) const;
  // The stored bytes of one tensor.
  std::string_view bytes(const std::string& name) const;
  // A CPU contiguous copy converted to `dtype` (float <-> half/bf16, ints <-> floats).
  at::Tensor tensor(const std::string& name, at::ScalarType dtype) const;
  // The tensor in its stored dtype.
  at::Tensor tensor(const std::string& name) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// A checkpoint folder: `model.safetensors`, or `model.safetensors.index.json` naming shards in its
// "weight_map". Tensor names must be unique across shards.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir);
  static bool exists_in(const std::filesystem::path& dir);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws, naming the folder and tensor
  const File& file_of(const std::string& name) const;     // throws, naming the folder and tensor
  at::Tensor tensor(const std::string& name, at::ScalarType dtype) const;
  std::string description() const;  // the file(s) for error messages
  // SHA-256 over every tensor in name order: name, dtype, shape and stored bytes (see tensors_sha256).
  // `rename` maps stored names to the names hashed (and sorted) instead, e.g. to canonicalise.
  std::string weights_sha256(const std::map<std::string, std::string>& rename = {}) const;

 private:
  std::filesystem::path dir_;
  std::vector<File> files_;
  std::map<std::string, size_t> file_index_;  // tensor name -> files_ index
};

// One tensor to hash: the name it is hashed under (a canonical name, so that e.g. two spellings of
// the same model agree), the file holding it and its name there.
struct HashEntry {
  std::string hashed_name;
  const File* file = nullptr;
  std::string stored_name;
};
// The digest of a set of tensors as stored: for each, in the given order, the hashed name, dtype,
// shape (decimal, comma separated), each followed by a NUL, then the byte count (u64 little-endian)
// and the bytes. No conversion happens: it reads the file's bytes once.
std::string tensors_sha256(const std::vector<HashEntry>& entries);

// The whole file in memory. Tensors: any dtype dtype_name knows, on any device (copied to CPU,
// contiguous). Data is written in name order, the header padded to 8 bytes.
std::string encode(const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata = {});

// Writes the same bytes as encode() to `path` without holding them all in memory: to "<path>.tmp",
// fsync, rename over `path`, fsync the folder. Throws std::runtime_error naming the path.
void write_file(const std::filesystem::path& path, const std::map<std::string, at::Tensor>& tensors,
                const std::map<std::string, std::string>& metadata = {});

}  // namespace statetune::engine::safetensors
