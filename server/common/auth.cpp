#include "server/serving/auth.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "server/engine/adapters/adapter_store.h"
#include "server/engine/util/bounded_json.h"
#include "server/engine/util/sha256.h"

namespace statetune::serving {
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
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read the tenants file " + path.string());
  std::error_code ec;
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxTenantsFileBytes) {
    throw std::runtime_error("the tenants file " + path.string() + " is " + std::to_string(size) +
                             " bytes; the limit is " + std::to_string(kMaxTenantsFileBytes));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return from_json_text(buf.str(), path.string());
}

TenantRegistry TenantRegistry::from_json_text(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = engine::parse_bounded_json(text, engine::JsonLimits{kMaxTenantsFileBytes, kMaxTenantsFileDepth}, origin);
  } catch (const engine::JsonInputError& e) {
    throw std::runtime_error(std::string(e.what()) + " (see server/serving/auth.h for the format)");
  }
  if (!j.is_object()) {
    throw std::runtime_error(origin + ": not a JSON object (see server/serving/auth.h for the format)");
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
      engine::AdapterStore::validate_name("tenant", name);
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

}  // namespace statetune::serving
