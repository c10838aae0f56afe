// statetune-train: see service.h. Every flag also reads STATETUNE_<FLAG> from the environment.
#include <ATen/Parallel.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <exception>

#include "kernels/cpu_level.h"
#include "server/engine/model/default_model.h"
#include "server/common/config.h"
#include "server/common/logging.h"
#include "server/common/shutdown.h"
#include "server/http/http_flags.h"
#include "server/training/service.h"

using namespace statetune;

int main(int argc, char** argv) {
  common::FlagSet flags(
      "statetune-train",
      "Fine-tune state-offset adapters on uploaded data sets and publish them to statetune-serve.");
  flags.add("listen", "127.0.0.1:50061", "gRPC address host:port (port 0 picks a free one)");
  flags.add("metrics-listen", "127.0.0.1:9091",
            "Prometheus /metrics address host:port; 'off' disables it");
  flags.add("model", "", "model folder (config.json + model.safetensors); default: the shipped models/default");
  flags.add("tokenizer", "", "tokenizer.json (default: <model>/tokenizer.json)");
  flags.add("data-dir", "train-data",
            "jobs.db, data sets, checkpoints and trained adapters (created if missing)");
  flags.add("tenants-file", "",
            "tenants and hashed API keys, JSON (the same file as statetune-serve) [required]");
  flags.add("serving-addr", "127.0.0.1:50051",
            "statetune-serve address trained adapters are published to");
  flags.add("serving-admin-key", "",
            "statetune-serve's admin key (publishing uploads for the job's tenant)");
  flags.add("device", "cpu", "cpu | cuda | cuda:N");
  flags.add("dtype", "f32", "compute dtype of the frozen weights: f32 | bf16");
  flags.add("threads", "0", "intra-op CPU threads (0: one per core)");
  flags.add("max-dataset-bytes", "256MiB", "largest data set upload");
  flags.add("tenant-storage-bytes", "1GiB", "most data set bytes one tenant may store");
  flags.add("max-active-jobs", "4", "most queued + running jobs per tenant");
  flags.add("min-examples", "8",
            "fewest examples a data set (and a job's training split) may have");
  flags.add("max-example-tokens", "4096", "most tokens of prompt + completion in one example");
  flags.add("checkpoint-every", "10",
            "steps between checkpoints (a restart resumes from the last one)");
  flags.add("log-every", "1", "steps between step events of a job");
  flags.add("publish-retry-seconds", "600",
            "how long a finished job keeps retrying to publish while statetune-serve is down "
            "(it stays running meanwhile; then it fails, its adapter kept)");
  flags.add("ready-file", "", "write {port, metrics_port, http_port, pid} as JSON here once serving");
  http::add_http_flags(flags);
  flags.add("log-format", "text", "text | json");
  flags.add("log-level", "info", "trace | debug | info | warn | error");
  try {
    if (!flags.parse(argc, argv)) {
      std::fputs(flags.help().c_str(), stdout);
      return 0;
    }
    common::setup_logging(common::parse_log_format(flags.str("log-format")),
                          flags.str("log-level"));
    training::TrainServiceOptions o;
    o.listen = flags.str("listen");
    o.metrics_listen = flags.str("metrics-listen") == "off" ? "" : flags.str("metrics-listen");
    o.model_dir = engine::model_dir_or_default(flags.str("model"));
    o.tokenizer_path = flags.str("tokenizer");
    o.data_dir = flags.str("data-dir");
    o.tenants_file = flags.str("tenants-file");
    o.serving_addr = flags.str("serving-addr");
    o.serving_admin_key = flags.str("serving-admin-key");
    o.device = flags.str("device");
    o.dtype = flags.str("dtype");
    o.max_dataset_bytes = flags.bytes("max-dataset-bytes");
    o.tenant_storage_bytes = flags.bytes("tenant-storage-bytes");
    o.max_active_jobs = flags.integer("max-active-jobs");
    o.min_examples = flags.integer("min-examples");
    o.max_example_tokens = flags.integer("max-example-tokens");
    o.checkpoint_every = flags.integer("checkpoint-every");
    o.log_every = flags.integer("log-every");
    o.ready_file = flags.str("ready-file");
    // A multipart upload carries the file and a few small fields.
    o.http = http::http_options_from_flags(flags, o.max_dataset_bytes + (int64_t{64} << 10), /*auto_threads=*/16);
    o.model_id = http::model_id_from_flags(flags, o.model_dir);
    o.chat_template = http::chat_template_from_flags(flags, o.model_dir);
    const double retry_s = std::stod(flags.str("publish-retry-seconds"));
    if (!(retry_s >= 0 && retry_s <= 7 * 24 * 3600)) {
      throw std::invalid_argument("--publish-retry-seconds must be in [0, 604800]");
    }
    o.publish_retry_for = std::chrono::milliseconds(static_cast<int64_t>(retry_s * 1000));
    if (o.tenants_file.empty()) throw std::invalid_argument("--tenants-file is required");
    if (o.max_active_jobs < 1 || o.min_examples < 1 || o.checkpoint_every < 1 || o.log_every < 1) {
      throw std::invalid_argument(
          "--max-active-jobs, --min-examples, --checkpoint-every and --log-every must be >= 1");
    }
    at::set_num_threads(common::resolve_thread_count(flags.integer("threads")));
    // Which build of the CPU kernels runs (and a bad STATETUNE_CPU_LEVEL stops the start here).
    common::log_event(spdlog::level::info, "cpu.kernels",
                      {{"level", kernels::cpu::active_cpu_level().describe()}});

    // A file-size limit (RLIMIT_FSIZE) must fail the write (EFBIG, answered as a full disk), not
    // kill the service with SIGXFSZ.
    std::signal(SIGXFSZ, SIG_IGN);
    common::block_termination_signals();
    common::ShutdownSignal shutdown(/*watch_signals=*/true);
    training::TrainService service(o);
    service.start();
    const std::string reason = shutdown.wait();
    common::log_event(spdlog::level::info, "train.stopping", {{"reason", reason}});
    service.stop();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "statetune-train: %s\n", e.what());
    return 1;
  }
}
