// The life cycle both service binaries share: parse the flags (add_service_flags' plus the binary's
// own), set up logging and CPU threads, start the service, load it in the background, wait for
// SIGTERM / SIGINT (or a failed load), stop it gracefully.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "server/common/config.h"
#include "server/common/service_options.h"

namespace statetune::common {

class Service {
 public:
  virtual ~Service() = default;
  // Listens. Throws std::runtime_error naming what failed.
  virtual void start() = 0;
  // The slow part of starting (loading the model), on a thread of its own after start(), so that a
  // SIGTERM meanwhile still ends the process promptly. Throws std::runtime_error naming what failed.
  virtual void load() {}
  // Graceful stop; `reason` names what asked for it ("SIGTERM", "load failed").
  virtual void shutdown(const std::string& reason) = 0;
};

// Runs a service binary; returns main's exit status. `make` builds the service from the parsed flags
// (its own ones) and the common options; whatever it or the service throws is printed as
// "<program>: <message>" and exits 1.
int run_service(int argc, char** argv, FlagSet& flags,
                const std::function<std::unique_ptr<Service>(const FlagSet&, ServiceOptions)>& make);

}  // namespace statetune::common
