#include "server/http/bearer_auth.h"

#include "server/http/api_error.h"

namespace statetune::http {

common::Principal authenticate(const httplib::Request& req, const common::TenantRegistry& tenants,
                                bool allow_admin) {
  if (!req.has_header("Authorization")) {
    throw ApiError(401, "authentication_error",
                   "missing API key: send `Authorization: Bearer <api key>`", "", "missing_api_key");
  }
  auto principal = tenants.authenticate_header(req.get_header_value("Authorization"));
  if (!principal) throw ApiError(401, "authentication_error", "incorrect API key provided", "", "invalid_api_key");
  if (principal->admin && !allow_admin) {
    throw ApiError(403, "permission_error", "the admin key has no models, files or jobs; use a tenant key");
  }
  return *principal;
}

}  // namespace statetune::http
