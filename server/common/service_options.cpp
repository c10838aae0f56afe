#include "server/common/service_options.h"

#include <stdexcept>

namespace statetune::common {

void add_service_flags(FlagSet& flags, const std::string& default_listen, const std::string& default_metrics_listen) {
  flags.add("listen", default_listen, "gRPC address host:port (port 0 picks a free one)");
  flags.add("metrics-listen", default_metrics_listen, "Prometheus /metrics address host:port; 'off' disables it");
  flags.add("model", "", "model folder (config.json + model.safetensors); default: the shipped models/default");
  flags.add("tokenizer", "", "tokenizer.json (default: <model>/tokenizer.json)");
  flags.add("tenants-file", "",
            "tenants and hashed API keys, JSON (see server/common/auth.h; one file for both services) [required]");
  flags.add("tls-cert", "", "PEM server certificate chain (enables TLS with --tls-key)");
  flags.add("tls-key", "", "PEM private key for --tls-cert");
  flags.add("device", "cpu", "cpu | cuda | cuda:N");
  flags.add("dtype", "f32", "compute dtype of the weights: f32 | bf16");
  flags.add("threads", "0", "intra-op CPU threads (0: one per core)");
  flags.add("ready-file", "", "write {port, metrics_port, pid} as JSON here once listening");
  flags.add("log-format", "text", "text | json");
  flags.add("log-level", "info", "trace | debug | info | warn | error");
}

ServiceOptions read_service_flags(const FlagSet& flags) {
  ServiceOptions o;
  o.listen = flags.str("listen");
  o.metrics_listen = flags.str("metrics-listen") == "off" ? "" : flags.str("metrics-listen");
  o.model_dir = flags.str("model");
  o.tokenizer_path = flags.str("tokenizer");
  o.tenants_file = flags.str("tenants-file");
  o.tls_cert_file = flags.str("tls-cert");
  o.tls_key_file = flags.str("tls-key");
  o.device = flags.str("device");
  o.dtype = flags.str("dtype");
  o.ready_file = flags.str("ready-file");
  if (o.tenants_file.empty()) throw std::invalid_argument("--tenants-file is required");
  if (o.tls() && (o.tls_cert_file.empty() || o.tls_key_file.empty())) {
    throw std::invalid_argument("TLS needs both --tls-cert and --tls-key");
  }
  return o;
}

void add_database_flags(FlagSet& flags, const std::string& what_is_shared) {
  flags.add("database", "", "shared mode: PostgreSQL URL (postgresql://user@host:port/db) holding " + what_is_shared);
  flags.add("database-password-file", "", "file whose first line is the --database password");
  flags.add("database-pool-size", "4", "connections to --database for requests");
  flags.add("database-start-seconds", "60",
            "at start, how long to retry an unreachable --database (each failed try logged) before exiting");
}

DatabaseFlags read_database_flags(const FlagSet& flags) {
  DatabaseFlags d;
  d.url = flags.str("database");
  d.password_file = flags.str("database-password-file");
  d.pool_size = flags.integer("database-pool-size");
  if (d.pool_size < 1) throw std::invalid_argument("--database-pool-size must be >= 1");
  const double start_seconds = flags.number("database-start-seconds");
  if (!(start_seconds >= 0 && start_seconds <= 86400)) {
    throw std::invalid_argument("--database-start-seconds must be between 0 and 86400");
  }
  d.start_timeout = std::chrono::milliseconds(static_cast<int64_t>(start_seconds * 1000));
  return d;
}

}  // namespace statetune::common
