#include "server/serving/adapter_storage_mode.h"

#include <spdlog/spdlog.h>

#include "server/common/logging.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/storage/postgres/pg_adapter_store.h"
#include "server/storage/postgres/schema.h"

namespace statetune::serving {

std::unique_ptr<engine::AdapterStorage> open_adapter_storage(const ServerOptions& o,
                                                             const engine::ModelFingerprint& base) {
  engine::AdapterQuota quota;
  quota.tenant_bytes = o.tenant_adapter_bytes;
  quota.tenant_adapters = o.tenant_adapters;
  quota.versions_per_adapter = o.adapter_versions;
  quota.prune_old_versions = o.prune_adapter_versions;
  if (o.database.url.empty()) return std::make_unique<engine::AdapterStore>(o.adapters_dir, base, quota);

  storage::DatabaseOptions dbo;
  dbo.url = o.database.url;
  dbo.password_file = o.database.password_file;
  dbo.pool_size = static_cast<int>(o.database.pool_size);
  auto db = std::make_shared<storage::Database>(dbo);
  try {
    storage::PgAdapterStoreOptions so;
    so.cache_dir = o.adapters_dir / ".sha256-cache";
    so.quota = quota;
    int applied = 0;
    std::unique_ptr<storage::PgAdapterStore> store;
    storage::retry_while_unavailable(*db, "migrating and reading the adapters", o.database.start_timeout, [&] {
      applied += db->migrate(storage::statetune_migrations());
      try {
        store = std::make_unique<storage::PgAdapterStore>(db, base, so);
      } catch (const engine::AdapterStorageUnavailable& e) {
        throw storage::DatabaseUnavailable(e.what());
      }
    });
    common::log_event(spdlog::level::info, "adapters.shared",
                      {{"database", db->describe()}, {"migrations_applied", applied},
                       {"pool_size", dbo.pool_size}, {"cache_dir", so.cache_dir.string()}});
    return store;
  } catch (const std::exception& e) {
    throw std::runtime_error("the adapter database " + db->describe() + ": " + storage::safe_message(e));
  }
}

}  // namespace statetune::serving
