// The settings every statetune service has (listening, metrics, model, tenants, TLS, device, ready
// file, logging), declared once as flags so both binaries spell and document them alike. Each main
// adds only its own flags after these.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "server/common/config.h"

namespace statetune::common {

struct ServiceOptions {
  std::string listen;          // host:port; port 0 picks a free one
  std::string metrics_listen;  // empty: no metrics endpoint
  std::filesystem::path model_dir;
  std::filesystem::path tokenizer_path;  // empty: <model_dir>/tokenizer.json
  std::filesystem::path tenants_file;
  std::string tls_cert_file, tls_key_file;  // both or neither
  std::string device = "cpu";               // cpu | cuda | cuda:N
  std::string dtype = "f32";                // f32 | bf16
  std::filesystem::path ready_file;         // written (JSON: ports, pid) once listening

  bool tls() const { return !tls_cert_file.empty() || !tls_key_file.empty(); }
};

// Declares --listen, --metrics-listen, --model, --tokenizer, --tenants-file, --tls-cert, --tls-key,
// --device, --dtype, --threads, --ready-file, --log-format and --log-level.
void add_service_flags(FlagSet& flags, const std::string& default_listen, const std::string& default_metrics_listen);

// The values of those flags; `model` stays as given (empty: the caller's default). Throws
// std::invalid_argument naming the flag when --tenants-file is missing or TLS has only one half.
ServiceOptions read_service_flags(const FlagSet& flags);

// The shared mode's PostgreSQL (shared/docs/scale-out.md), the same four flags on both services.
// `url` empty: the embedded mode. The URL is never logged (only its password-free description is).
struct DatabaseFlags {
  std::string url;
  std::string password_file;  // its first line is the password
  int64_t pool_size = 4;      // connections for requests
  // How long start-up retries an unreachable database (migrations, first read) before failing.
  std::chrono::milliseconds start_timeout{std::chrono::seconds(60)};
};

// Declares --database (`what_is_shared`: what the database holds, for the help text),
// --database-password-file, --database-pool-size and --database-start-seconds.
void add_database_flags(FlagSet& flags, const std::string& what_is_shared);
// Their values; throws std::invalid_argument naming the flag that is out of range.
DatabaseFlags read_database_flags(const FlagSet& flags);

}  // namespace statetune::common
