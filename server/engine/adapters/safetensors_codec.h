// The slice of the safetensors format adapter files need: encode a few small F32/BF16 tensors with
// string metadata into one buffer, and decode such a buffer with every offset and size checked.
// (Format: u64 little-endian header size, JSON header {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {string: string}}, then the packed tensor bytes.)
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace statetune::engine::safetensors_codec {

struct DecodedTensor {
  std::string dtype;           // "F32", "BF16", ... as written in the header
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;   // byte range inside Decoded::data
};

struct Decoded {
  std::map<std::string, std::string> metadata;
  std::map<std::string, DecodedTensor> tensors;
  std::string data;  // the tensor bytes (the file minus its header)
};

// tensors: contiguous CPU F32 or BF16. Names are written in map order.
std::string encode(const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata);

// Throws std::runtime_error naming `source` when the buffer is not well-formed safetensors:
// truncated, header not JSON, offsets outside the data or not matching dtype x shape.
Decoded decode(std::string file, const std::string& source);

// The tensor as fp32 (a copy); throws std::runtime_error for dtypes other than F32 and BF16.
at::Tensor to_float(const Decoded& file, const std::string& name, const std::string& source);

}  // namespace statetune::engine::safetensors_codec
