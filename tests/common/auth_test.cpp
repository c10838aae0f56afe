// Tenant auth without gRPC: the tenants file's rules and bearer keys to principals, as both services
// and an HTTP front end use them.
#include "server/common/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "server/engine/util/durable_file.h"

namespace statetune::common {
namespace {

std::string tenants_json() {
  return nlohmann::json{{"admin_key_sha256", TenantRegistry::hash_key("admin-key")},
                        {"tenants",
                         {{{"name", "acme"}, {"api_keys_sha256", {TenantRegistry::hash_key("acme-1"),
                                                                  TenantRegistry::hash_key("acme-2")}}},
                          {{"name", "beta"}, {"api_keys_sha256", nlohmann::json::array()}}}}}
      .dump();
}

TEST(TenantAuth, BearerKeysMapToTheirTenantOrTheAdmin) {
  const auto reg = TenantRegistry::from_json_text(tenants_json(), "tenants.json");
  EXPECT_EQ(reg.tenant_count(), 2u);
  EXPECT_TRUE(reg.has_tenant("beta"));
  EXPECT_FALSE(reg.has_tenant("gamma"));
  for (const char* header : {"Bearer acme-1", "bearer acme-2", "BEARER  acme-1 \r\n"}) {
    const auto p = reg.authenticate_header(header);
    ASSERT_TRUE(p.has_value()) << header;
    EXPECT_EQ(p->tenant, "acme");
    EXPECT_FALSE(p->admin);
    EXPECT_EQ(p->label(), "acme");
  }
  const auto admin = reg.authenticate_header("Bearer admin-key");
  ASSERT_TRUE(admin.has_value());
  EXPECT_TRUE(admin->admin);
  EXPECT_EQ(admin->label(), "_admin");
  for (const char* header : {"", "Bearer", "Bearer ", "Basic acme-1", "acme-1", "Bearer acme-3", "Bearer ACME-1"}) {
    EXPECT_FALSE(reg.authenticate_header(header).has_value()) << header;
  }
  EXPECT_FALSE(reg.authenticate("").has_value());
}

TEST(TenantAuth, ABadTenantsFileStopsTheStartWithTheReason) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      TenantRegistry::from_json_text(text, "t.json");
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  const std::string h = TenantRegistry::hash_key("k");
  EXPECT_NE(error_of("[]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of("{}").find("\"tenants\" array"), std::string::npos);
  EXPECT_NE(error_of(R"({"tenants":[{"name":"../x","api_keys_sha256":[]}]})").find("invalid"), std::string::npos);
  EXPECT_NE(error_of(R"({"tenants":[{"name":"a","api_keys_sha256":["abc"]}]})").find("64 hex"), std::string::npos);
  EXPECT_NE(error_of(R"({"tenants":[{"name":"a","api_keys_sha256":[]},{"name":"a","api_keys_sha256":[]}]})")
                .find("listed twice"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"admin_key_sha256":")" + h + R"(","tenants":[{"name":"a","api_keys_sha256":[")" + h +
                     R"("]}]})")
                .find("two principals"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(100, '[')).find("t.json"), std::string::npos);
}

TEST(TenantAuth, FromFileReadsWithABound) {
  const auto dir = std::filesystem::temp_directory_path() / ("statetune_auth_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  engine::write_file_durably(dir / "tenants.json", tenants_json());
  EXPECT_EQ(TenantRegistry::from_file(dir / "tenants.json").tenant_count(), 2u);
  try {
    TenantRegistry::from_file(dir / "absent.json");
    ADD_FAILURE() << "a missing tenants file loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tenants file"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace statetune::common
