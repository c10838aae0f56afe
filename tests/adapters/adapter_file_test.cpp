#include "server/engine/adapters/adapter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "server/engine/util/durable_file.h"
#include "tests/adapters/test_fixtures.h"

namespace statetune::engine {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::RawFile;
using testing::tiny_config;
using testing::tiny_fingerprint;

Adapter sample_adapter(const std::vector<std::string>& methods, uint64_t seed = 7) {
  Adapter a = random_adapter(tiny_config(), tiny_fingerprint(), methods, seed, 0.5);
  a.name = "sst2-demo";
  a.version = "3";
  a.extra_metadata = {{"training", {{"lr", 4e-4}, {"epochs", 10}}}, {"eval", {{"accuracy", 0.91}}}};
  return a;
}

void expect_tensor_eq(const at::Tensor& got, const at::Tensor& want, bool bf16) {
  ASSERT_EQ(got.defined(), want.defined());
  if (!want.defined()) return;
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  ASSERT_EQ(got.sizes(), want.sizes());
  // bf16 on disk: the loaded values are exactly the bf16 roundings of the originals.
  const at::Tensor expected = bf16 ? want.to(at::kBFloat16).to(at::kFloat) : want;
  EXPECT_TRUE(at::equal(got, expected));
  if (bf16) {
    EXPECT_TRUE(at::allclose(got, want, /*rtol=*/1e-2, /*atol=*/1e-3));
  }
}

std::string error_of(const fs::path& path) {
  try {
    load_adapter(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(AdapterFile, RoundTripsEverySubsetOfMethodsInFp32AndBf16) {
  const auto dir = fresh_dir("file-roundtrip");
  const std::vector<std::string> all = {kStateOffset, kOutputOffset, kInitialState};
  for (int mask = 1; mask < 8; ++mask) {
    std::vector<std::string> methods;
    for (int i = 0; i < 3; ++i) {
      if (mask & (1 << i)) methods.push_back(all[static_cast<size_t>(i)]);
    }
    for (const bool bf16 : {false, true}) {
      SCOPED_TRACE(join_methods(methods) + (bf16 ? " bf16" : " fp32"));
      const Adapter a = sample_adapter(methods, static_cast<uint64_t>(mask));
      const fs::path path = dir / (std::to_string(mask) + (bf16 ? "-bf16" : "-fp32") + ".safetensors");
      save_adapter(a, path, bf16 ? at::kBFloat16 : at::kFloat);
      const Adapter b = load_adapter(path);
      EXPECT_EQ(b.name, a.name);
      EXPECT_EQ(b.version, a.version);
      EXPECT_EQ(b.methods, methods);
      EXPECT_EQ(b.base.to_json(), a.base.to_json());
      EXPECT_EQ(b.extra_metadata, a.extra_metadata);
      EXPECT_EQ(b.created_unix, a.created_unix);
      EXPECT_EQ(b.parameter_count(), trainable_parameter_count(methods, tiny_config()));
      expect_tensor_eq(b.state_offset, a.state_offset, bf16);
      expect_tensor_eq(b.output_offset, a.output_offset, bf16);
      expect_tensor_eq(b.initial_state, a.initial_state, bf16);

      const RawFile raw = RawFile::parse(read_file(path));
      EXPECT_EQ(raw.metadata.at("format"), kAdapterFormatTag);
      EXPECT_EQ(raw.metadata.at("methods"), join_methods(methods));
      EXPECT_EQ(raw.tensors.size(), methods.size() * 3);  // one tensor per method per layer
      EXPECT_EQ(raw.tensors.begin()->second.dtype, bf16 ? "BF16" : "F32");
    }
  }
  // Saving leaves no temporary files behind.
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().extension(), ".safetensors") << e.path();
  }
}

TEST(AdapterFile, RandomAdaptersAreSeededAndZeroAdaptersAreZero) {
  const Adapter a = random_adapter(tiny_config(), tiny_fingerprint(), {kStateOffset}, 42, 0.1);
  const Adapter b = random_adapter(tiny_config(), tiny_fingerprint(), {kStateOffset}, 42, 0.1);
  const Adapter c = random_adapter(tiny_config(), tiny_fingerprint(), {kStateOffset}, 43, 0.1);
  EXPECT_TRUE(at::equal(a.state_offset, b.state_offset));
  EXPECT_FALSE(at::equal(a.state_offset, c.state_offset));
  const double std = a.state_offset.std().item<double>();
  EXPECT_GT(std, 0.05);
  EXPECT_LT(std, 0.2);
  const Adapter z = zero_adapter(tiny_config(), tiny_fingerprint(), {kOutputOffset, kStateOffset});
  EXPECT_EQ(z.methods, (std::vector<std::string>{kStateOffset, kOutputOffset}));
  EXPECT_EQ(z.state_offset.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(z.output_offset.sizes(), at::IntArrayRef({3, 8}));
  EXPECT_FALSE(z.initial_state.defined());
  EXPECT_THROW(zero_adapter(tiny_config(), tiny_fingerprint(), {"lora"}), std::invalid_argument);
  EXPECT_THROW(zero_adapter(tiny_config(), tiny_fingerprint(), {}), std::invalid_argument);
}

class CorruptAdapterFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_dir("file-corrupt");
    const fs::path good = dir_ / "good.safetensors";
    save_adapter(sample_adapter({kStateOffset, kOutputOffset}), good);
    bytes_ = read_file(good);
    raw_ = RawFile::parse(bytes_);
    ASSERT_NO_THROW(load_adapter(good));
  }
  // Writes `content` and returns the loader's error message ("" if it loaded).
  std::string load_error(const std::string& content) {
    const fs::path p = dir_ / "bad.safetensors";
    write_file_durably(p, content);
    return error_of(p);
  }
  static void expect_mentions(const std::string& message, const std::string& what) {
    EXPECT_NE(message.find(what), std::string::npos) << "message: '" << message << "' lacks '" << what << "'";
  }

  fs::path dir_;
  std::string bytes_;
  RawFile raw_;
};

TEST_F(CorruptAdapterFile, TruncatedOrEmptyFilesAreRefused) {
  EXPECT_NE(load_error(bytes_.substr(0, bytes_.size() - 5)), "");
  EXPECT_NE(load_error(bytes_.substr(0, 20)), "");
  EXPECT_NE(load_error(""), "");
  const std::string msg = error_of(dir_ / "does-not-exist.safetensors");
  expect_mentions(msg, "does-not-exist.safetensors");
}

TEST_F(CorruptAdapterFile, WrongFormatTagOrVersionIsRefused) {
  RawFile r = raw_;
  r.metadata["format"] = "pt";
  expect_mentions(load_error(r.serialize()), "statetune-adapter");
  r = raw_;
  r.metadata.erase("format");
  expect_mentions(load_error(r.serialize()), "statetune-adapter");
  r = raw_;
  r.metadata["format_version"] = "99";
  expect_mentions(load_error(r.serialize()), "format_version");
}

TEST_F(CorruptAdapterFile, UnknownMethodsAndStrayTensorsAreRefused) {
  RawFile r = raw_;
  r.metadata["methods"] = "state_offset,lora";
  expect_mentions(load_error(r.serialize()), "lora");
  r = raw_;
  r.metadata["methods"] = "state_offset";  // output_offset tensors present but not declared
  expect_mentions(load_error(r.serialize()), "layers.0.output_offset");
  r = raw_;
  r.tensors["layers.3.state_offset"] = r.tensors.at("layers.0.state_offset");  // only 3 layers
  expect_mentions(load_error(r.serialize()), "layers.3.state_offset");
}

TEST_F(CorruptAdapterFile, WrongShapesAreRefused) {
  RawFile r = raw_;
  auto& e = r.tensors.at("layers.1.state_offset");
  e.shape = {8, 3};
  e.bytes.resize(8 * 3 * 4);
  const std::string msg = load_error(r.serialize());
  expect_mentions(msg, "layers.1.state_offset");
  expect_mentions(msg, "[8, 4]");
  r = raw_;
  r.tensors.at("layers.2.output_offset").shape = {2, 4};
  expect_mentions(load_error(r.serialize()), "layers.2.output_offset");
  r = raw_;
  r.tensors.at("layers.0.output_offset").dtype = "I32";
  expect_mentions(load_error(r.serialize()), "layers.0.output_offset");
}

TEST_F(CorruptAdapterFile, NonFiniteValuesAreRefused) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    RawFile r = raw_;
    std::memcpy(r.tensors.at("layers.2.state_offset").bytes.data() + 4 * 5, &bad, 4);
    const std::string msg = load_error(r.serialize());
    expect_mentions(msg, "NaN or Inf");
    expect_mentions(msg, "state_offset");
  }
  // save refuses them too: a broken adapter never reaches the disk.
  Adapter a = sample_adapter({kOutputOffset});
  a.output_offset[1][2] = std::nanf("");
  EXPECT_THROW(save_adapter(a, dir_ / "nan.safetensors"), std::runtime_error);
  EXPECT_FALSE(fs::exists(dir_ / "nan.safetensors"));
}

TEST_F(CorruptAdapterFile, MissingLayersAreRefused) {
  RawFile r = raw_;
  r.tensors.erase("layers.1.state_offset");
  const std::string msg = load_error(r.serialize());
  expect_mentions(msg, "layers.1.state_offset");
  expect_mentions(msg, "missing");
}

TEST_F(CorruptAdapterFile, BadBaseMetadataIsRefused) {
  RawFile r = raw_;
  r.metadata["base"] = "{not json";
  expect_mentions(load_error(r.serialize()), "base");
  r = raw_;
  r.metadata.erase("base");
  expect_mentions(load_error(r.serialize()), "base");
}

TEST_F(CorruptAdapterFile, DeeplyNestedMetadataIsRefusedWithoutRecursing) {
  // 100,000 levels overflow the stack of anything that recurses per level (parse, copy, dump);
  // `base` gets 10,000, which still fits its size limit, so that the depth check is what refuses it.
  for (const auto& [key, depth] : std::map<std::string, size_t>{{"extra", 100000}, {"base", 10000}}) {
    RawFile r = raw_;
    r.metadata[key] = std::string(depth, '[') + std::string(depth, ']');
    const std::string msg = load_error(r.serialize());
    expect_mentions(msg, "'" + key + "'");
    expect_mentions(msg, "nests deeper");
    EXPECT_LT(msg.size(), 1000u) << "the error echoes the input";
  }
}

TEST(AdapterCompatibility, AnotherBaseModelIsRefusedSayingWhatDiffers) {
  const Adapter a = sample_adapter({kStateOffset});
  EXPECT_NO_THROW(check_compatible(a, tiny_fingerprint()));

  ModelFingerprint other_weights = tiny_fingerprint(std::string(64, 'b'));
  try {
    check_compatible(a, other_weights);
    FAIL() << "accepted an adapter for other weights";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("sst2-demo"), std::string::npos) << msg;
    EXPECT_NE(msg.find("different base model"), std::string::npos) << msg;
    EXPECT_NE(msg.find(a.base.mismatch(other_weights)), std::string::npos) << msg;
  }
  ModelFingerprint wider = tiny_fingerprint();
  wider.d_inner = 16;
  EXPECT_THROW(check_compatible(a, wider), std::runtime_error);
}

TEST(AdapterParameters, CountsMatchThePaper) {
  MambaConfig m130;  // defaults are Mamba-130M: 24 layers, D = 1536, N = 16
  EXPECT_EQ(trainable_parameter_count({kStateOffset}, m130), 589824);
  EXPECT_EQ(trainable_parameter_count({kOutputOffset}, m130), 36864);
  EXPECT_EQ(trainable_parameter_count({kInitialState}, m130), 589824);
  EXPECT_EQ(trainable_parameter_count({kStateOffset, kOutputOffset}, m130), 589824 + 36864);
  MambaConfig m14 = m130;
  m14.n_layer = 48;
  m14.d_inner = 4096;
  EXPECT_EQ(trainable_parameter_count({kStateOffset}, m14), 3145728);
  EXPECT_EQ(trainable_parameter_count({kOutputOffset}, m14), 196608);
  MambaConfig m28 = m130;
  m28.n_layer = 64;
  m28.d_inner = 5120;
  EXPECT_EQ(trainable_parameter_count({kStateOffset}, m28), 5242880);
  EXPECT_EQ(trainable_parameter_count({kOutputOffset}, m28), 327680);
}

TEST(AdapterMethods, ParseNormalizeAndJoin) {
  EXPECT_EQ(parse_methods("output_offset, state_offset,output_offset"),
            (std::vector<std::string>{kStateOffset, kOutputOffset}));
  EXPECT_EQ(join_methods({kStateOffset, kInitialState}), "state_offset,initial_state");
  EXPECT_THROW(parse_methods("state_offset,prefix"), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::engine
