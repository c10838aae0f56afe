#pragma once
// Outside input quoted back in an error message or a log line: bounded, and shown byte for byte even
// when it holds NULs, control characters or bytes that are not UTF-8 (which would otherwise cut the
// message short, garble a terminal or make a JSON log record unwritable).

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace statetune::engine {

// At most `max_bytes` of `bytes` with every byte outside printable ASCII (and the backslash) written
// as \xNN; when `bytes` is longer, "... (N bytes)" follows. Never longer than 4 * max_bytes + 32.
inline std::string printable_excerpt(std::string_view bytes, size_t max_bytes = 64) {
  std::string out;
  const size_t shown = bytes.size() < max_bytes ? bytes.size() : max_bytes;
  out.reserve(shown + 32);
  for (size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  if (shown < bytes.size()) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

}  // namespace statetune::engine
