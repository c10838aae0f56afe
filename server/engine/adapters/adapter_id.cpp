#include "server/engine/adapters/adapter_id.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "server/engine/util/printable.h"

namespace statetune::engine {

std::string AdapterId::key() const { return tenant + "/" + name + "@" + version; }

std::optional<AdapterId> AdapterId::parse(std::string_view key) {
  // Names cannot hold '/' or '@', so the first '/' and the last '@' are the separators.
  const size_t slash = key.find('/');
  const size_t at = key.rfind('@');
  if (slash == std::string_view::npos || at == std::string_view::npos || at < slash) return std::nullopt;
  AdapterId id{std::string(key.substr(0, slash)), std::string(key.substr(slash + 1, at - slash - 1)),
               std::string(key.substr(at + 1))};
  if (!is_valid_name(id.tenant) || !is_valid_name(id.name) || id.version.empty()) return std::nullopt;
  return id;
}

bool is_valid_name(std::string_view value) {
  if (value.empty() || value.size() > 64 || value[0] == '.') return false;
  return std::all_of(value.begin(), value.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

void validate_name(const std::string& what, const std::string& value) {
  if (!is_valid_name(value)) {
    throw std::invalid_argument(what + " name '" + printable_excerpt(value) +
                                "' is invalid: use 1-64 characters from A-Z a-z 0-9 . _ - and do "
                                "not start with '.'");
  }
}

}  // namespace statetune::engine
