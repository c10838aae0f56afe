// The bytes of a chunked upload (adapters to statetune-serve, data sets to statetune-train): a header
// announces total_bytes and a SHA-256, data messages follow. Checked as they arrive, so a hostile
// client cannot make the receiver hold more than it announced: no chunk above the chunk limit, never
// more than total_bytes in all, exactly total_bytes at the end, and the SHA-256 the header names.
// Every refusal throws std::invalid_argument (answered INVALID_ARGUMENT) saying which rule. No gRPC
// here: the handlers feed it their messages' `data`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/engine/util/sha256.h"

namespace statetune::common {

class UploadAssembler {
 public:
  // `total_bytes` comes from the header and must already be within the receiver's limit (it is
  // reserved at once).
  UploadAssembler(uint64_t total_bytes, size_t max_chunk_bytes);

  void add(std::string_view chunk);
  // Checks the size and the SHA-256 (an empty `expected_sha256` passes only when not `sha256_required`)
  // and hands the bytes over.
  std::string finish(const std::string& expected_sha256, bool sha256_required);
  // Lower-case hex; valid after finish().
  const std::string& sha256() const { return digest_; }
  uint64_t received() const { return data_.size(); }

 private:
  uint64_t total_;
  size_t max_chunk_;
  std::string data_;
  engine::Sha256 hash_;
  std::string digest_;
};

}  // namespace statetune::common
