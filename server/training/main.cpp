// statetune-train: see service.h. Every flag also reads STATETUNE_<FLAG> from the environment.
#include <stdexcept>
#include <string>

#include "server/common/adapter_quota_flags.h"
#include "server/common/service_main.h"
#include "server/http/http_flags.h"
#include "server/training/service.h"

using namespace statetune;

int main(int argc, char** argv) {
  common::FlagSet flags(
      "statetune-train",
      "Fine-tune state-offset adapters on uploaded data sets and publish them to statetune-serve.");
  common::add_service_flags(flags, "127.0.0.1:50061", "127.0.0.1:9091");
  flags.add("data-dir", "train-data",
            "jobs.db, data sets, checkpoints and trained adapters (created if missing)");
  flags.add("serving-addr", "127.0.0.1:50051",
            "statetune-serve address trained adapters are published to (embedded mode)");
  common::add_database_flags(flags,
                             "every replica's data sets, jobs and checkpoints; trained adapters are published into "
                             "it (default: SQLite in --data-dir)");
  flags.add("lease-seconds", "30",
            "shared mode: how long a worker's claim on a job holds without renewal (renewed every third of it); "
            "a dead worker's job is resumed by another about this long after");
  common::add_adapter_quota_flags(flags);
  flags.add("serving-admin-key", "",
            "statetune-serve's admin key (publishing uploads for the job's tenant)");
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
  http::add_http_flags(flags);
  return common::run_service(argc, argv, flags, [](const common::FlagSet& flags, common::ServiceOptions service) {
    training::TrainServiceOptions o;
    o.service = std::move(service);
    o.data_dir = flags.str("data-dir");
    o.serving_addr = flags.str("serving-addr");
    o.serving_admin_key = flags.str("serving-admin-key");
    o.database = common::read_database_flags(flags);
    const double lease_s = flags.number("lease-seconds");
    if (!(lease_s >= 0.3 && lease_s <= 3600)) throw std::invalid_argument("--lease-seconds must be in [0.3, 3600]");
    o.lease = std::chrono::milliseconds(static_cast<int64_t>(lease_s * 1000));
    o.adapter_quota = common::adapter_quota_from_flags(flags);
    o.max_dataset_bytes = flags.bytes("max-dataset-bytes");
    o.tenant_storage_bytes = flags.bytes("tenant-storage-bytes");
    o.max_active_jobs = flags.integer("max-active-jobs");
    o.min_examples = flags.integer("min-examples");
    o.max_example_tokens = flags.integer("max-example-tokens");
    o.checkpoint_every = flags.integer("checkpoint-every");
    o.log_every = flags.integer("log-every");
    // A multipart upload carries the file and a few small fields.
    o.http = http::http_options_from_flags(flags, o.max_dataset_bytes + (int64_t{64} << 10), /*auto_threads=*/16);
    o.http.tls_cert_file = o.service.tls_cert_file;
    o.http.tls_key_file = o.service.tls_key_file;
    o.model_id = http::model_id_from_flags(flags, o.service.model_dir);
    o.chat_template = http::chat_template_from_flags(flags, o.service.model_dir);
    const double retry_s = std::stod(flags.str("publish-retry-seconds"));
    if (!(retry_s >= 0 && retry_s <= 7 * 24 * 3600)) {
      throw std::invalid_argument("--publish-retry-seconds must be in [0, 604800]");
    }
    o.publish_retry_for = std::chrono::milliseconds(static_cast<int64_t>(retry_s * 1000));
    if (o.max_active_jobs < 1 || o.min_examples < 1 || o.checkpoint_every < 1 || o.log_every < 1) {
      throw std::invalid_argument(
          "--max-active-jobs, --min-examples, --checkpoint-every and --log-every must be >= 1");
    }
    return std::make_unique<training::TrainService>(std::move(o));
  });
}
