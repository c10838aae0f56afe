// The chunked-upload checks both services share: chunk limit, announced size, SHA-256.
#include "server/common/upload_assembler.h"

#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>

namespace statetune::common {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(UploadAssembler, AssemblesChunksAndChecksTheHash) {
  UploadAssembler up(6, 4);
  up.add("abc");
  up.add("");
  up.add("def");
  const std::string digest = engine::Sha256::hex("abcdef");
  EXPECT_EQ(up.finish(digest, true), "abcdef");
  EXPECT_EQ(up.sha256(), digest);
  UploadAssembler optional(3, 4);
  optional.add("xyz");
  EXPECT_EQ(optional.finish("", /*sha256_required=*/false), "xyz");
}

TEST(UploadAssembler, RefusesWhatTheHeaderDidNotAnnounce) {
  EXPECT_NE(error_of([] { UploadAssembler(6, 4).add("abcde"); }).find("more than"), std::string::npos);
  EXPECT_NE(error_of([] {
              UploadAssembler up(6, 4);
              up.add("abcd");
              up.add("efg");
            }).find("more data than header.total_bytes (6)"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              UploadAssembler up(6, 4);
              up.add("abc");
              up.finish(engine::Sha256::hex("abc"), true);
            }).find("received 3 bytes; header.total_bytes is 6"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              UploadAssembler up(3, 4);
              up.add("abc");
              up.finish(std::string(64, '0'), false);
            }).find("sha256 mismatch"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              UploadAssembler up(3, 4);
              up.add("abc");
              up.finish("", /*sha256_required=*/true);
            }).find("sha256 mismatch"),
            std::string::npos);
}

}  // namespace
}  // namespace statetune::common
