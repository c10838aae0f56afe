// `Authorization: Bearer <key>` on HTTP requests: the same keys and tenants file as gRPC.
#pragma once

#include <httplib.h>

#include "server/common/auth.h"

namespace statetune::http {

// The caller, or ApiError 401 (missing header, unknown key). `allow_admin` false: the admin key is a
// 403 (it has no adapters, data sets or jobs of its own).
common::Principal authenticate(const httplib::Request& req, const common::TenantRegistry& tenants,
                                bool allow_admin = false);

}  // namespace statetune::http
