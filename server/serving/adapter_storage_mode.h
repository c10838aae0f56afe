// Which AdapterStorage statetune-serve runs: the local folder store (default) or, with --database,
// the PostgreSQL one shared by every replica (migrated at start).
#pragma once

#include <memory>

#include "server/engine/adapters/adapter_storage.h"
#include "server/serving/server.h"

namespace statetune::serving {

// Throws std::runtime_error naming what failed (never the database password).
std::unique_ptr<engine::AdapterStorage> open_adapter_storage(const ServerOptions& options,
                                                             const engine::ModelFingerprint& base);

}  // namespace statetune::serving
