// Tenants and API keys. The tenants file (--tenants-file) is JSON:
//   {
//     "admin_key_sha256": "<hex sha256 of the admin key>",            (optional)
//     "tenants": [
//       {"name": "acme", "api_keys_sha256": ["<hex sha256 of a key>", ...]},
//       ...
//     ]
//   }
// Only hashes are stored, so the file leaks no usable key; `statetune hash-key KEY` prints one.
// Clients send `Authorization: Bearer <key>` (gRPC metadata, or an HTTP header); the key is hashed
// and looked up. Nothing here knows gRPC: grpc_auth.h adapts a call's metadata to it, and an HTTP
// front end passes its header value to authenticate_header() the same way.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace statetune::common {

// Who a key belongs to: one tenant, or the operator's admin key.
struct Principal {
  std::string tenant;  // empty for the admin key
  bool admin = false;
  // The tenant label of logs and metrics: the caller's tenant, "_admin" for the admin key.
  std::string label() const { return admin ? "_admin" : tenant; }
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

}  // namespace statetune::common
