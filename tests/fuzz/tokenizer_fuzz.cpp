// The tokenizer on raw bytes (prompts come from tenants): encoding with and without special tokens,
// and decoding arbitrary ids, one-shot and streamed. The tokenizer is the shipped model's
// (GPT-NeoX-20B's), or STATETUNE_FUZZ_TOKENIZER.
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/text/streaming_decoder.h"
#include "server/engine/text/tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

const statetune::engine::Tokenizer& tokenizer() {
  static const auto tok = [] {
    const char* path = std::getenv("STATETUNE_FUZZ_TOKENIZER");
    return statetune::engine::Tokenizer::from_file(path ? path : STATETUNE_SOURCE_DIR "/models/default/tokenizer.json");
  }();
  return tok;
}

// decode() and a StreamingDecoder fed one id at a time agree (the decoder's documented promise).
std::string decode_both_ways(const std::vector<int32_t>& ids) {
  const auto& tok = tokenizer();
  const std::string whole = tok.decode(ids);
  statetune::engine::StreamingDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  FUZZ_CHECK(streamed == whole);
  return whole;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& tok = tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool special : {true, false}) {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(text, special);
    } catch (const std::invalid_argument&) {
      break;  // not UTF-8: refused, as documented
    }
    for (int32_t id : ids) FUZZ_CHECK(tok.is_valid_id(id));
    const std::string decoded = decode_both_ways(ids);
    // Decoding gives the normalized text back byte for byte, so encoding that again gives the same ids.
    if (!special) FUZZ_CHECK(tok.encode(decoded, false) == ids);
  }
  // The same bytes as token ids (mostly outside the vocabulary, which decode skips).
  std::vector<int32_t> ids(size / sizeof(int32_t));
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * sizeof(int32_t));
  for (auto& id : ids) id %= 60000;
  decode_both_ways(ids);
  return 0;
}
