// Cutting text the service got from outside (or wrote itself from such text) before it goes into
// a status message or a report: a status travels in gRPC metadata of bounded size.
#pragma once

#include <string>

namespace statetune::training {

// `text` when it has at most `max_bytes`; otherwise its first bytes up to a UTF-8 boundary
// followed by `marker`.
inline std::string cut_text(const std::string& text, size_t max_bytes, const std::string& marker) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + marker;
}

}  // namespace statetune::training
