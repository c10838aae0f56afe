#include "server/engine/text/streaming_decoder.h"

#include "server/engine/text/unicode.h"

namespace statetune::engine {

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string StreamingDecoder::push(int32_t id) {
  if (skip_special_tokens_ && tokenizer_->is_special(id)) return {};
  pending_ += tokenizer_->token_bytes(id);
  return drain();
}

std::string StreamingDecoder::push(const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (skip_special_tokens_ && tokenizer_->is_special(id)) continue;
    pending_ += tokenizer_->token_bytes(id);
  }
  return drain();
}

std::string StreamingDecoder::drain() {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
  size_t i = 0;
  while (i < pending_.size()) {
    const unicode::Utf8Step step = unicode::decode_utf8_step(p + i, pending_.size() - i);
    if (step.status == unicode::Utf8Status::kIncomplete) break;  // wait for the next token
    if (step.status == unicode::Utf8Status::kValid) {
      out.append(pending_, i, step.length);
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += step.length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDecoder::flush() {
  std::string out = drain();
  if (!pending_.empty()) out.append("\xEF\xBF\xBD");
  pending_.clear();
  return out;
}

}  // namespace statetune::engine
