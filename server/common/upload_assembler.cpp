#include "server/common/upload_assembler.h"

#include <stdexcept>

#include "server/engine/util/printable.h"

namespace statetune::common {

UploadAssembler::UploadAssembler(uint64_t total_bytes, size_t max_chunk_bytes)
    : total_(total_bytes), max_chunk_(max_chunk_bytes) {
  data_.reserve(total_bytes);
}

void UploadAssembler::add(std::string_view chunk) {
  if (chunk.size() > max_chunk_) {
    throw std::invalid_argument("an upload message carries more than " + std::to_string(max_chunk_ >> 20) +
                                " MiB of data");
  }
  if (data_.size() + chunk.size() > total_) {
    throw std::invalid_argument("more data than header.total_bytes (" + std::to_string(total_) + ")");
  }
  hash_.update(chunk);
  data_.append(chunk.data(), chunk.size());
}

std::string UploadAssembler::finish(const std::string& expected_sha256, bool sha256_required) {
  if (data_.size() != total_) {
    throw std::invalid_argument("received " + std::to_string(data_.size()) + " bytes; header.total_bytes is " +
                                std::to_string(total_));
  }
  digest_ = hash_.hex_digest();
  if ((sha256_required || !expected_sha256.empty()) && digest_ != expected_sha256) {
    throw std::invalid_argument("sha256 mismatch: the data hashes to " + digest_ + ", the header says '" +
                                engine::printable_excerpt(expected_sha256, 64) + "'");
  }
  return std::move(data_);
}

}  // namespace statetune::common
