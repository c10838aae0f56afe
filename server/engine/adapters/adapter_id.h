// Which adapter version a request, a pool slot or a metric means: tenant, adapter name and version,
// written as one key "tenant/name@version" (the adapter pool's and the scheduler's key, parsed back
// into labels by the serving metrics). Names are checked here too, so everything that accepts a
// tenant or adapter name from outside (the store, the tenants file, the RPC handlers) applies one
// rule. No LibTorch in here.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace statetune::engine {

struct AdapterId {
  std::string tenant;
  std::string name;
  std::string version;

  // "tenant/name@version".
  std::string key() const;
  // The inverse of key(): nullopt for anything key() cannot have produced from valid names (the
  // base model's empty key included).
  static std::optional<AdapterId> parse(std::string_view key);

  bool operator==(const AdapterId& o) const {
    return tenant == o.tenant && name == o.name && version == o.version;
  }
};

// Tenant and adapter (and data set) names: [A-Za-z0-9._-]{1,64}, not starting with '.' (so no
// "." / ".." and no hidden files).
bool is_valid_name(std::string_view value);
// Throws std::invalid_argument naming `what` and the rule.
void validate_name(const std::string& what, const std::string& value);

}  // namespace statetune::engine
