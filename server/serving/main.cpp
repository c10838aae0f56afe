// statetune-serve: see server.h. Every flag also reads STATETUNE_<FLAG> from the environment.
#include <stdexcept>

#include "server/common/adapter_quota_flags.h"
#include "server/common/service_main.h"
#include "server/http/http_flags.h"
#include "server/serving/server.h"

using namespace statetune;

int main(int argc, char** argv) {
  common::FlagSet flags("statetune-serve", "Serve a Mamba model with per-tenant adapters over gRPC.");
  common::add_service_flags(flags, "127.0.0.1:50051", "127.0.0.1:9090");
  flags.add("adapters-dir", "adapters", "adapter store folder (created if missing; reloaded on restart)");
  common::add_database_flags(flags,
                             "every replica's adapters; --adapters-dir then only caches their bytes (default: the "
                             "local adapter store)");
  flags.add("max-batch", "32", "most requests decoded together");
  flags.add("cuda-graphs", "false",
            "replay each decode step as a CUDA graph, one per batch-size bucket (1, 2, 4, 8, then steps of 8; "
            "--device cuda only)");
  flags.add("queue-size", "64", "most waiting requests; beyond it Generate answers RESOURCE_EXHAUSTED");
  flags.add("max-prefill-tokens", "4096", "padded prompt tokens prefilled together per step");
  flags.add("max-prompt-tokens", "2048", "longest prompt accepted");
  flags.add("max-new-tokens", "256", "largest max_tokens accepted (and the default)");
  flags.add("max-request-bytes", "1MiB", "largest Generate request");
  flags.add("max-upload-bytes", "64MiB", "largest adapter upload (never above the largest adapter file the base can have)");
  flags.add("max-concurrent-uploads", "8", "adapter uploads running at once; beyond it RESOURCE_EXHAUSTED");
  flags.add("max-concurrent-uploads-per-tenant", "2", "adapter uploads one API key's tenant may run at once");
  flags.add("upload-idle-seconds", "30", "an adapter upload that sends nothing for this long is cancelled");
  flags.add("max-rpc-threads", "0", "gRPC handler threads (0: max-batch + queue-size + max-concurrent-uploads + 32)");
  flags.add("adapter-pool-bytes", "256MiB", "device memory for resident adapters (LRU beyond it)");
  flags.add("adapter-slots", "0", "cap on resident adapters (0: as many as --adapter-pool-bytes holds)");
  common::add_adapter_quota_flags(flags);
  flags.add("drain-seconds", "30", "on SIGTERM: how long running requests may finish before being cancelled");
  http::add_http_flags(flags);
  return common::run_service(argc, argv, flags, [](const common::FlagSet& flags, common::ServiceOptions service) {
    serving::ServerOptions o;
    o.service = std::move(service);
    o.adapters_dir = flags.str("adapters-dir");
    o.database = common::read_database_flags(flags);
    o.max_batch = flags.integer("max-batch");
    o.cuda_graphs = flags.boolean("cuda-graphs");
    o.queue_size = flags.integer("queue-size");
    o.max_prefill_tokens = flags.integer("max-prefill-tokens");
    o.max_prompt_tokens = flags.integer("max-prompt-tokens");
    o.max_new_tokens = flags.integer("max-new-tokens");
    o.max_request_bytes = flags.bytes("max-request-bytes");
    o.max_upload_bytes = flags.bytes("max-upload-bytes");
    o.max_uploads = flags.integer("max-concurrent-uploads");
    o.max_uploads_per_tenant = flags.integer("max-concurrent-uploads-per-tenant");
    o.upload_idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.number("upload-idle-seconds") * 1000));
    o.max_rpc_threads = flags.integer("max-rpc-threads");
    o.adapter_pool_bytes = flags.bytes("adapter-pool-bytes");
    o.adapter_slots = flags.integer("adapter-slots");
    o.tenant_adapter_bytes = flags.bytes("tenant-adapter-bytes");
    o.tenant_adapters = flags.integer("tenant-adapters");
    o.adapter_versions = flags.integer("adapter-versions");
    o.prune_adapter_versions = flags.boolean("prune-adapter-versions");
    o.drain_timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.number("drain-seconds") * 1000));
    o.http = http::http_options_from_flags(flags, o.max_request_bytes, /*auto_threads=*/o.max_batch + o.queue_size + 16);
    o.http.tls_cert_file = o.service.tls_cert_file;
    o.http.tls_key_file = o.service.tls_key_file;
    o.model_id = http::model_id_from_flags(flags, o.service.model_dir);
    o.chat_template = http::chat_template_from_flags(flags, o.service.model_dir);
    if (o.max_batch < 1 || o.queue_size < 0 || o.max_prompt_tokens < 1 || o.max_new_tokens < 1) {
      throw std::invalid_argument("--max-batch, --max-prompt-tokens and --max-new-tokens must be >= 1, "
                                  "--queue-size >= 0");
    }
    if (o.tenant_adapter_bytes < 1 || o.tenant_adapters < 1 || o.adapter_versions < 1) {
      throw std::invalid_argument("--tenant-adapter-bytes, --tenant-adapters and --adapter-versions must be >= 1");
    }
    if (o.max_uploads < 1 || o.max_uploads_per_tenant < 1 || o.upload_idle_timeout.count() <= 0 ||
        o.max_rpc_threads < 0) {
      throw std::invalid_argument("--max-concurrent-uploads, --max-concurrent-uploads-per-tenant and "
                                  "--upload-idle-seconds must be > 0, --max-rpc-threads >= 0");
    }
    return std::make_unique<serving::ServingServer>(std::move(o));
  });
}
