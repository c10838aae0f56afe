// statetune's PostgreSQL schema as numbered forward migrations (Database::migrate applies them).
// Rules: never edit a migration once released, only append; each must keep the previous release's
// binaries working (replicas are upgraded one at a time).
#pragma once

#include <vector>

#include "server/storage/postgres/database.h"

namespace statetune::storage {

const std::vector<Migration>& statetune_migrations();

// The channel every adapter change is announced on. Payload: {"tenant": ..., "name": ...,
// "sent_unix_us": the database's clock at the NOTIFY, for the notify lag; optional}.
inline constexpr const char* kAdapterChannel = "statetune_adapters";
// The channel a training job's new event is announced on (payload: the job id).
inline constexpr const char* kJobChannel = "statetune_jobs";
// The NOTIFY of a change of adapter $2/$3 on channel $1, stamped with the database's clock (one clock
// for every writer, so a replica's lag figure does not depend on which replica or worker wrote).
inline constexpr const char* kNotifyAdapterChangeSql =
    "SELECT pg_notify($1, json_build_object('tenant', $2::text, 'name', $3::text, 'sent_unix_us',"
    " (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)::text)";

}  // namespace statetune::storage
