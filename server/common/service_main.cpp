#include "server/common/service_main.h"

#include <ATen/Parallel.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <thread>

#include "kernels/cpu_level.h"
#include "server/common/logging.h"
#include "server/common/shutdown.h"

namespace statetune::common {

int run_service(int argc, char** argv, FlagSet& flags,
                const std::function<std::unique_ptr<Service>(const FlagSet&, ServiceOptions)>& make) {
  const std::string program = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "statetune";
  try {
    if (!flags.parse(argc, argv)) {
      std::fputs(flags.help().c_str(), stdout);
      return 0;
    }
    setup_logging(parse_log_format(flags.str("log-format")), flags.str("log-level"));
    std::unique_ptr<Service> service = make(flags, read_service_flags(flags));
    at::set_num_threads(resolve_thread_count(flags.integer("threads")));
    // Which build of the CPU kernels runs (and a bad STATETUNE_CPU_LEVEL stops the start here).
    log_event(spdlog::level::info, "cpu.kernels", {{"level", kernels::cpu::active_cpu_level().describe()}});

    // A file-size limit (RLIMIT_FSIZE) must fail the write (EFBIG, answered as a full disk), not
    // kill the service with SIGXFSZ.
    std::signal(SIGXFSZ, SIG_IGN);
    // Signals go to the watcher thread only; block them before any other thread starts.
    block_termination_signals();
    ShutdownSignal shutdown(/*watch_signals=*/true);
    service->start();
    std::exception_ptr load_error;
    std::thread loader([&] {
      try {
        service->load();
      } catch (...) {
        load_error = std::current_exception();
        shutdown.request("load failed");
      }
    });
    const std::string reason = shutdown.wait();
    loader.join();
    if (load_error) std::rethrow_exception(load_error);
    service->shutdown(reason);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), e.what());
    return 1;
  }
}

}  // namespace statetune::common
