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

}  // namespace statetune::common
