// statetune's PostgreSQL schema as numbered forward migrations (Database::migrate applies them).
// Rules: never edit a migration once released, only append; each must keep the previous release's
// binaries working (replicas are upgraded one at a time).
#pragma once

#include <vector>

#include "server/storage/postgres/database.h"

namespace statetune::storage {

const std::vector<Migration>& statetune_migrations();

// The channel every adapter change is announced on (payload: {"tenant": ..., "name": ...}).
inline constexpr const char* kAdapterChannel = "statetune_adapters";
// The channel a training job's new event is announced on (payload: the job id).
inline constexpr const char* kJobChannel = "statetune_jobs";

}  // namespace statetune::storage
