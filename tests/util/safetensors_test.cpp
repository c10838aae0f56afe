#include "server/engine/util/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace statetune::engine::safetensors {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const fs::path dir = fs::path(STATETUNE_BINARY_DIR) / "test-tmp" / "util" /
                       (name + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

std::string with_header(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + data;
}

std::string parse_error(const std::string& bytes) {
  try {
    File::parse(bytes, "buf.safetensors");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

std::map<std::string, at::Tensor> sample() {
  at::manual_seed(3);
  return {{"a.f32", at::randn({3, 5})},
          {"b.f16", at::randn({4}).to(at::kHalf)},
          {"c.bf16", at::randn({2, 2, 2}).to(at::kBFloat16)},
          {"d.i64", at::arange(-3, 9, at::kLong)},
          {"e.i32", at::arange(0, 6, at::kInt).view({2, 3})},
          {"f.scalar", at::full({}, 2.5f)},
          {"g.empty", at::empty({0, 4})}};
}

TEST(Safetensors, HandWrittenFileIsRead) {
  const float v[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  const File f = File::parse(
      with_header(R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
      "hand");
  EXPECT_EQ(f.metadata().at("k"), "v");
  const at::Tensor t = f.tensor("w", at::kFloat);
  EXPECT_FLOAT_EQ(t[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(t[1].item<float>(), -2.0f);
  EXPECT_TRUE(at::equal(f.tensor("w", at::kDouble), t.to(at::kDouble)));
}

TEST(Safetensors, DeeplyNestedHeaderIsRefusedWithoutRecursing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string msg = parse_error(with_header(R"({"__metadata__":{"k":)" + deep + "}}", ""));
  EXPECT_NE(msg.find("nests deeper"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 1000u) << "the error echoes the input";
}

TEST(Safetensors, RoundTripsEveryDtypeInMemoryAndOnDisk) {
  const auto tensors = sample();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"x", "y z"}};
  const std::string bytes = encode(tensors, meta);
  // The header is padded so the data section starts 8-byte aligned.
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  EXPECT_EQ(header % 8, 0u);

  const fs::path path = fresh_dir("roundtrip") / "t.safetensors";
  write_file(path, tensors, meta);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  std::ifstream in(path, std::ios::binary);
  const std::string on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, bytes);

  for (const File& f : {File::parse(bytes, "mem"), File::open(path)}) {
    EXPECT_EQ(f.metadata(), meta);
    ASSERT_EQ(f.tensors().size(), tensors.size());
    for (const auto& [name, t] : tensors) {
      SCOPED_TRACE(name);
      EXPECT_EQ(f.info(name).dtype, dtype_name(t.scalar_type()));
      const at::Tensor got = f.tensor(name);
      EXPECT_EQ(got.scalar_type(), t.scalar_type());
      EXPECT_TRUE(at::equal(got, t));
      // Conversions on request.
      EXPECT_TRUE(at::equal(f.tensor(name, at::kFloat), t.to(at::kFloat)));
    }
  }
}

TEST(Safetensors, ConvertsHalfAndBf16ToFloatExactly) {
  const at::Tensor x = at::randn({100});
  const File f = File::parse(encode({{"h", x.to(at::kHalf)}, {"b", x.to(at::kBFloat16)}}), "mem");
  EXPECT_TRUE(at::equal(f.tensor("h", at::kFloat), x.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::equal(f.tensor("b", at::kFloat), x.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_TRUE(at::equal(f.tensor("h", at::kBFloat16), x.to(at::kHalf).to(at::kBFloat16)));
}

TEST(Safetensors, MalformedFilesAreRefusedWithTheSourceAndReason) {
  const std::string good = encode(sample());
  EXPECT_EQ(parse_error(good), "");
  auto expect = [](const std::string& msg, const std::string& what) {
    EXPECT_NE(msg.find("buf.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "'" << msg << "' lacks '" << what << "'";
  };
  expect(parse_error(""), "shorter than");
  expect(parse_error(good.substr(0, 20)), "exceeds the file");
  expect(parse_error(good.substr(0, good.size() - 3)), "truncated");
  expect(parse_error(with_header("{not json", "")), "not valid JSON");
  expect(parse_error(with_header("[1,2]", "")), "not a JSON object");
  expect(parse_error(with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "12345678")),
         "do not match");
  expect(parse_error(with_header(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", "12345678")),
         "unknown dtype");
  expect(parse_error(with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", "12345678")),
         "outside");
  expect(parse_error(with_header(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678")),
         "invalid shape");
  expect(parse_error(with_header(R"({"w":{"dtype":"F32","shape":[2]}})", "12345678")), "malformed entry");
  expect(parse_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                 "12345678")),
         "overlap");
  expect(parse_error(with_header(R"({"__metadata__":{"k":1}})", "")), "__metadata__");
  // A huge header size must not make the reader allocate it.
  std::string huge = good;
  for (int i = 0; i < 8; ++i) huge[static_cast<size_t>(i)] = static_cast<char>(0xff);
  expect(parse_error(huge), "exceeds the file");

  const File f = File::parse(good, "buf.safetensors");
  try {
    f.info("nope");
    FAIL();
  } catch (const std::runtime_error& e) {
    expect(e.what(), "nope");
  }
  EXPECT_THROW(File::open(fresh_dir("missing") / "none.safetensors"), std::runtime_error);
}

TEST(Safetensors, ShardedCheckpointAndItsHash) {
  const auto tensors = sample();
  const fs::path single = fresh_dir("single");
  write_file(single / "model.safetensors", tensors);
  const fs::path sharded = fresh_dir("sharded");
  std::map<std::string, at::Tensor> p1, p2;
  nlohmann::json wm;
  int i = 0;
  for (const auto& [name, t] : tensors) {
    (i++ % 2 ? p2 : p1)[name] = t;
    wm[name] = (i % 2) ? "s1.safetensors" : "s2.safetensors";
  }
  write_file(sharded / "s1.safetensors", p1);
  write_file(sharded / "s2.safetensors", p2);
  write_bytes(sharded / "model.safetensors.index.json", nlohmann::json{{"weight_map", wm}}.dump());

  const Checkpoint a = Checkpoint::open(single);
  const Checkpoint b = Checkpoint::open(sharded);
  EXPECT_EQ(a.names(), b.names());
  for (const auto& name : a.names()) {
    EXPECT_TRUE(at::equal(a.tensor(name, at::kDouble), b.tensor(name, at::kDouble)));
  }
  // The hash covers names and contents only, not how they are split over files.
  EXPECT_EQ(a.weights_sha256().size(), 64u);
  EXPECT_EQ(a.weights_sha256(), b.weights_sha256());
  EXPECT_EQ(a.weights_sha256(), Checkpoint::open(single).weights_sha256());

  auto changed = tensors;
  changed["a.f32"] = changed["a.f32"].clone();
  changed["a.f32"][1][2] = 7.0f;
  const fs::path other = fresh_dir("other");
  write_file(other / "model.safetensors", changed);
  EXPECT_NE(Checkpoint::open(other).weights_sha256(), a.weights_sha256());
  auto renamed = tensors;
  renamed["a.f33"] = renamed["a.f32"];
  renamed.erase("a.f32");
  write_file(other / "model.safetensors", renamed);
  EXPECT_NE(Checkpoint::open(other).weights_sha256(), a.weights_sha256());

  // An index naming a shard that lacks the tensor, or a tensor in two shards, is refused.
  wm["a.f32"] = (wm["a.f32"] == "s1.safetensors") ? "s2.safetensors" : "s1.safetensors";
  write_bytes(sharded / "model.safetensors.index.json", nlohmann::json{{"weight_map", wm}}.dump());
  EXPECT_THROW(Checkpoint::open(sharded), std::runtime_error);
  write_bytes(sharded / "model.safetensors.index.json", "{oops");
  EXPECT_THROW(Checkpoint::open(sharded), std::runtime_error);
  EXPECT_THROW(Checkpoint::open(fresh_dir("empty")), std::runtime_error);
}

}  // namespace
}  // namespace statetune::engine::safetensors
