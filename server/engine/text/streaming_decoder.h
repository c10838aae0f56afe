// Incremental decoding for streaming generation: feed ids one at a time, get back only complete
// UTF-8 text. Bytes of a character that a token leaves unfinished are held back until the next
// token completes it. Invalid bytes become U+FFFD as soon as they are known to be invalid, with the
// same maximal-subpart rule as Tokenizer::decode, so the concatenation of everything push() and
// flush() return equals decode() of all ids, however they were split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/engine/text/tokenizer.h"

namespace statetune::engine {

class StreamingDecoder {
 public:
  // The tokenizer must outlive the decoder.
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // Text that became complete with this id (possibly empty).
  std::string push(int32_t id);
  std::string push(const std::vector<int32_t>& ids);

  // End of the stream: held-back bytes can no longer be completed, so they are emitted as one
  // U+FFFD (what the reference's lossy decode makes of an incomplete tail). Resets the decoder.
  std::string flush();

  void reset() { pending_.clear(); }
  // Bytes held back, waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  std::string drain();

  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace statetune::engine
