// An uploaded adapter file, from bytes: the safetensors header and data ranges, then the adapter
// checks (format, methods, shapes against the recorded base, finite values), then the check against
// the serving base model's fingerprint. Any exception is a refusal, which is fine; a crash, a
// sanitizer report or a broken invariant is a finding.
#include <string>
#include <string_view>

#include "server/engine/adapters/adapter.h"
#include "server/engine/util/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

namespace st = statetune::engine;

// The base the seed adapters were made for (tests/fuzz/make_adapter_seeds.py): tiny, so that a
// valid file is a few hundred bytes and mutations of it reach every check.
const st::ModelFingerprint& serving_base() {
  static const st::ModelFingerprint base = [] {
    st::ModelFingerprint f;
    f.d_model = 4;
    f.n_layer = 2;
    f.d_inner = 8;
    f.d_state = 2;
    f.d_conv = 4;
    f.dt_rank = 1;
    f.vocab_size = 16;
    f.weights_sha256 = std::string(64, '0');
    return f;
  }();
  return base;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto file = st::safetensors::File::parse_borrowed(bytes, "fuzz.safetensors");
    for (const auto& [name, info] : file.tensors()) {
      // Every accepted range lies inside the input.
      const std::string_view stored = file.bytes(name);
      FUZZ_CHECK(stored.size() == info.end - info.begin);
      FUZZ_CHECK(stored.data() >= bytes.data() && stored.data() + stored.size() <= bytes.data() + bytes.size());
    }
  } catch (const std::exception&) {
    return 0;
  }
  try {
    const st::Adapter adapter = st::parse_adapter(bytes, "fuzz.safetensors");
    st::validate_adapter(adapter, "fuzz.safetensors");  // what parse_adapter accepts is valid
    st::check_compatible(adapter, serving_base());
  } catch (const std::exception&) {
  }
  return 0;
}
