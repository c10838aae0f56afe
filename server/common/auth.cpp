#include "server/common/auth.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "server/engine/adapters/adapter_id.h"
#include "server/engine/util/bounded_json.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/sha256.h"

namespace statetune::common {
namespace {

// A tenants file lists names and 64-character hashes: 64 MiB is millions of tenants, and its
// structure nests three levels.
constexpr size_t kMaxTenantsFileBytes = size_t{64} << 20;
constexpr int kMaxTenantsFileDepth = 8;

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

std::string TenantRegistry::hash_key(const std::string& api_key) { return engine::Sha256::hex(api_key); }

TenantRegistry TenantRegistry::from_file(const std::filesystem::path& path) {
  std::string text;
  try {
    text = engine::read_file(path, kMaxTenantsFileBytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("the tenants file: ") + e.what());
  }
  return from_json_text(text, path.string());
}

TenantRegistry TenantRegistry::from_json_text(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = engine::parse_bounded_json(text, engine::JsonLimits{kMaxTenantsFileBytes, kMaxTenantsFileDepth}, origin);
  } catch (const engine::JsonInputError& e) {
    throw std::runtime_error(std::string(e.what()) + " (see server/common/auth.h for the format)");
  }
  if (!j.is_object()) {
    throw std::runtime_error(origin + ": not a JSON object (see server/common/auth.h for the format)");
  }
  TenantRegistry out;
  if (j.contains("admin_key_sha256")) {
    if (!j["admin_key_sha256"].is_string()) throw std::runtime_error(origin + ": admin_key_sha256 is not a string");
    const std::string h = lower(j["admin_key_sha256"].get<std::string>());
    if (!is_hex64(h)) throw std::runtime_error(origin + ": admin_key_sha256 is not 64 hex characters");
    out.admin_hash_ = h;
  }
  if (!j.contains("tenants") || !j["tenants"].is_array()) {
    throw std::runtime_error(origin + ": needs a \"tenants\" array");
  }
  for (const auto& t : j["tenants"]) {
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) {
      throw std::runtime_error(origin + ": every tenant needs a \"name\"");
    }
    const std::string name = t["name"].get<std::string>();
    try {
      engine::validate_name("tenant", name);
    } catch (const std::exception& e) {
      throw std::runtime_error(origin + ": " + e.what());
    }
    if (out.tenant_names_.count(name)) throw std::runtime_error(origin + ": tenant '" + name + "' listed twice");
    out.tenant_names_[name] = true;
    ++out.tenants_;
    if (!t.contains("api_keys_sha256") || !t["api_keys_sha256"].is_array()) {
      throw std::runtime_error(origin + ": tenant '" + name + "' needs an \"api_keys_sha256\" array");
    }
    for (const auto& k : t["api_keys_sha256"]) {
      if (!k.is_string()) throw std::runtime_error(origin + ": tenant '" + name + "' has a key hash that is not a string");
      const std::string h = lower(k.get<std::string>());
      if (!is_hex64(h)) {
        throw std::runtime_error(origin + ": tenant '" + name + "' has a key hash that is not 64 hex characters");
      }
      if (out.hash_to_tenant_.count(h) || h == out.admin_hash_) {
        throw std::runtime_error(origin + ": one key hash is listed for two principals");
      }
      out.hash_to_tenant_[h] = name;
    }
  }
  return out;
}

std::optional<Principal> TenantRegistry::authenticate(const std::string& api_key) const {
  if (api_key.empty()) return std::nullopt;
  const std::string h = hash_key(api_key);
  if (!admin_hash_.empty() && h == admin_hash_) return Principal{"", true};
  if (auto it = hash_to_tenant_.find(h); it != hash_to_tenant_.end()) return Principal{it->second, false};
  return std::nullopt;
}

std::optional<Principal> TenantRegistry::authenticate_header(const std::string& header_value) const {
  const std::string prefix = "bearer ";
  if (header_value.size() <= prefix.size() || lower(header_value.substr(0, prefix.size())) != prefix) {
    return std::nullopt;
  }
  std::string key = header_value.substr(prefix.size());
  while (!key.empty() && key.front() == ' ') key.erase(key.begin());
  while (!key.empty() && (key.back() == ' ' || key.back() == '\r' || key.back() == '\n')) key.pop_back();
  return authenticate(key);
}

bool TenantRegistry::has_tenant(const std::string& tenant) const { return tenant_names_.count(tenant) > 0; }

}  // namespace statetune::common
