// Tenants and API keys. The tenants file (--tenants-file) is JSON:
//   {
//     "admin_key_sha256": "<hex sha256 of the admin key>",            (optional)
//     "tenants": [
//       {"name": "acme", "api_keys_sha256": ["<hex sha256 of a key>", ...]},
//       ...
//     ]
//   }
// Only hashes are stored, so the file leaks no usable key; `statetune hash-key KEY` prints one.
// Clients send `authorization: Bearer <key>` metadata; the key is hashed and looked up.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace statetune::serving {

struct Principal {
  std::string tenant;  // empty for the admin key
  bool admin = false;
};

class TenantRegistry {
 public:
  // Throws std::runtime_error naming the file and the problem (unreadable, malformed, a tenant name
  // that is not [A-Za-z0-9._-]{1,64}, a hash that is not 64 hex characters, one key for two tenants).
  static TenantRegistry from_file(const std::filesystem::path& path);
  static TenantRegistry from_json_text(const std::string& text, const std::string& origin);

  // nullopt when the key is unknown.
  std::optional<Principal> authenticate(const std::string& api_key) const;
  // Parses an `authorization` metadata value ("Bearer <key>", scheme case-insensitive).
  std::optional<Principal> authenticate_header(const std::string& header_value) const;

  bool has_tenant(const std::string& tenant) const;
  size_t tenant_count() const { return tenants_; }

  // Lower-case hex SHA-256 of a key, as stored in the file.
  static std::string hash_key(const std::string& api_key);

 private:
  std::map<std::string, std::string> hash_to_tenant_;
  std::map<std::string, bool> tenant_names_;
  std::string admin_hash_;
  size_t tenants_ = 0;
};

}  // namespace statetune::serving
