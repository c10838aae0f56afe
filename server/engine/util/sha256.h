// SHA-256 (FIPS 180-4), streaming. Used for model fingerprints: a checkpoint's weights are hashed once
// at load, straight from the file's bytes, so the digest does not depend on the compute dtype.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace statetune::engine {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // Finishes the hash; the object must not be updated afterwards.
  std::array<uint8_t, 32> digest();
  std::string hex_digest();  // lower-case, 64 characters

  static std::string hex(std::string_view data);  // one-shot convenience

  // Whether the x86 SHA extensions are used (when the CPU has them). Tests switch them off to check
  // the portable code gives the same digests; not for concurrent use with hashing.
  static bool hardware_available();
  static void set_use_hardware(bool use);

 private:
  void compress(const uint8_t* blocks, size_t n_blocks);
  uint32_t state_[8];
  uint64_t total_bytes_ = 0;
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  bool finished_ = false;
};

}  // namespace statetune::engine
