#include "server/engine/util/sha256.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace statetune::engine {
namespace {

// FIPS 180-4 / NIST CAVP vectors.
void expect_known_vectors() {
  EXPECT_EQ(Sha256::hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256::hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256::hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(Sha256::hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, KnownVectors) { expect_known_vectors(); }

TEST(Sha256, PortableCodeGivesTheSameDigests) {
  Sha256::set_use_hardware(false);
  expect_known_vectors();
  Sha256::set_use_hardware(true);
}

TEST(Sha256, StreamingInAnyPiecesEqualsOneShot) {
  std::mt19937 rng(7);
  std::string data(10000, '\0');
  for (char& ch : data) ch = static_cast<char>(rng());
  const std::string want = Sha256::hex(data);
  for (int trial = 0; trial < 20; ++trial) {
    Sha256 h;
    size_t pos = 0;
    while (pos < data.size()) {
      const size_t n = std::min<size_t>(data.size() - pos, rng() % 150);
      h.update(data.data() + pos, n);
      pos += n;
    }
    EXPECT_EQ(h.hex_digest(), want);
  }
  // Every length around the padding boundaries, hardware against portable.
  for (size_t n = 0; n < 200; ++n) {
    const std::string s = data.substr(0, n);
    const std::string hw = Sha256::hex(s);
    Sha256::set_use_hardware(false);
    EXPECT_EQ(Sha256::hex(s), hw) << n;
    Sha256::set_use_hardware(true);
  }
}

TEST(Sha256, UpdateAfterDigestIsAnError) {
  Sha256 h;
  h.update("x");
  h.hex_digest();
  EXPECT_THROW(h.update("y"), std::logic_error);
}

}  // namespace
}  // namespace statetune::engine
