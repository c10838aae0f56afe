// The tenants file (--tenants-file), and the authorization header checked against what it loaded.
#include <string>

#include "server/common/auth.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto registry = statetune::common::TenantRegistry::from_json_text(text, "fuzz-tenants.json");
    // The same bytes as a header value: a key that happens to be listed must map to a listed tenant.
    if (auto who = registry.authenticate_header("Bearer " + text); who && !who->admin) {
      FUZZ_CHECK(registry.has_tenant(who->tenant));
    }
  } catch (const std::exception&) {
  }
  return 0;
}
