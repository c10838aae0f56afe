#include "server/training/service.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>

#include "client/statetune_client.h"
#include "server/common/auth.h"
#include "server/common/grpc_auth.h"
#include "server/common/grpc_listen.h"
#include "server/common/logging.h"
#include "server/common/metrics.h"
#include "server/common/model_loading.h"
#include "server/common/upload_assembler.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/util/bounded_json.h"
#include "server/training/dataset_validator.h"
#include "server/engine/util/durable_file.h"
#include "server/training/job_runner.h"
#include "server/training/job_store.h"
#include "server/training/rpc_status.h"
#include "statetune/v1/training.grpc.pb.h"

namespace statetune::training {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;

namespace {

std::string random_id(const std::string& prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return prefix + buf;
}

v1::JobState to_proto(JobState s) { return static_cast<v1::JobState>(static_cast<int>(s)); }

void to_proto(const DatasetRecord& d, v1::DatasetInfo* out) {
  out->set_id(d.id);
  out->set_tenant(d.tenant);
  out->set_name(d.name);
  out->set_size_bytes(d.size_bytes);
  out->set_examples(d.examples);
  out->set_sha256(d.sha256);
  out->set_created_unix(d.created_unix);
  out->set_max_example_tokens(d.max_example_tokens);
}

void to_proto(const JobRecord& j, v1::Job* out) {
  out->set_id(j.id);
  out->set_tenant(j.tenant);
  out->set_state(to_proto(j.state));
  google::protobuf::util::JsonParseOptions po;
  po.ignore_unknown_fields = true;
  (void)google::protobuf::util::JsonStringToMessage(j.spec.dump(), out->mutable_request(), po);
  out->set_created_unix_ms(j.created_ms);
  out->set_started_unix_ms(j.started_ms);
  out->set_finished_unix_ms(j.finished_ms);
  out->set_step(j.step);
  out->set_total_steps(j.total_steps);
  out->set_train_loss(j.train_loss);
  out->set_val_loss(j.val_loss);
  if (!j.error_code.empty()) {
    out->mutable_error()->set_code(j.error_code);
    out->mutable_error()->set_message(j.error_message);
    out->mutable_error()->set_line(j.error_line);
  }
  out->set_adapter_name(j.adapter_name);
  out->set_adapter_version(j.adapter_version);
  for (auto it = j.eval.begin(); it != j.eval.end(); ++it) {
    if (it->is_number()) (*out->mutable_eval_metrics())[it.key()] = it->get<double>();
  }
  out->set_resumes(j.resumes);
}

void to_proto(const EventRecord& e, v1::JobEvent* out) {
  out->set_job_id(e.job_id);
  out->set_seq(e.seq);
  out->set_time_unix_ms(e.time_ms);
  out->set_state(to_proto(e.state));
  const auto& p = e.payload;
  if (e.type == "step") {
    auto* s = out->mutable_step();
    s->set_step(p.value("step", int64_t{0}));
    s->set_total_steps(p.value("total_steps", int64_t{0}));
    s->set_epoch(p.value("epoch", int64_t{0}));
    s->set_loss(p.value("loss", 0.0));
    s->set_learning_rate(p.value("learning_rate", 0.0));
    s->set_tokens_per_second(p.value("tokens_per_second", 0.0));
    s->set_eta_seconds(p.value("eta_seconds", 0.0));
    s->set_elapsed_seconds(p.value("elapsed_seconds", 0.0));
  } else if (e.type == "eval") {
    auto* v = out->mutable_eval();
    v->set_step(p.value("step", int64_t{0}));
    v->set_val_loss(p.value("val_loss", 0.0));
    v->set_val_token_accuracy(p.value("val_token_accuracy", 0.0));
    v->set_improved(p.value("improved", false));
  } else if (e.type == "error") {
    auto* er = out->mutable_error();
    er->set_code(p.value("code", ""));
    er->set_message(p.value("message", ""));
    er->set_line(p.value("line", int64_t{0}));
  } else {
    out->set_state_change(p.value("message", ""));
  }
}

}  // namespace

struct TrainService::Impl final : public v1::Training::Service {
  TrainServiceOptions o;
  std::unique_ptr<common::TenantRegistry> tenants;
  std::unique_ptr<common::GrpcAuthenticator> auth;
  std::unique_ptr<engine::MambaModel> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::unique_ptr<JobStore> store;
  EventBus bus;
  std::unique_ptr<common::MetricsServer> metrics_server;
  std::unique_ptr<prometheus::Registry> own_registry;
  std::unique_ptr<TrainingMetrics> metrics;
  std::unique_ptr<JobRunner> runner;
  std::unique_ptr<grpc::Server> server;
  std::atomic<bool> stopping{false};
  int port = 0;
  std::mutex upload_mu;  // storage-limit check + insert are one step per process
  // The longest token's bytes: a data-set line longer than max_example_tokens times this is over the
  // token limit without tokenizing it.
  size_t max_token_bytes = 0;

  Status authenticate(ServerContext* ctx, const char* method, std::string& tenant) {
    common::Principal p;
    if (Status st = auth->authenticate(*ctx, method, p); !st.ok()) return st;
    if (p.admin) {
      return Status(StatusCode::PERMISSION_DENIED,
                    "the admin key has no data sets or jobs; use a tenant key");
    }
    tenant = p.tenant;
    return Status::OK;
  }

  // Tokens of `text`, counted a chunk at a time and no further once above `limit` (tokenizing a
  // 20 MB line whole takes seconds). A chunk ends before a single space between two non-space
  // characters: the byte-level pre-tokenizer always starts a new piece there (" word"), so the
  // chunks' counts add up to the whole text's.
  int64_t count_tokens(std::string_view text, int64_t limit) const {
    constexpr size_t kChunk = 4096;
    auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    int64_t total = 0;
    size_t pos = 0;
    while (pos < text.size() && total <= limit) {
      size_t end = text.size();
      for (size_t i = pos + kChunk; i + 1 < text.size(); ++i) {
        if (text[i] == ' ' && !is_space(text[i - 1]) && !is_space(text[i + 1])) {
          end = i;
          break;
        }
      }
      total += static_cast<int64_t>(
          tokenizer->encode(text.substr(pos, end - pos), /*parse_special_tokens=*/false).size());
      pos = end;
    }
    return total;
  }

  Status upload_dataset(ServerContext* ctx, grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                       v1::DatasetInfo* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "UploadDataset", tenant); !st.ok()) return st;
    const std::string rid = common::new_request_id();
    auto result = [&](const char* r) { metrics->datasets.Add({{"result", r}}).Increment(); };
    v1::UploadDatasetRequest msg;
    if (!reader->Read(&msg) || !msg.has_header()) {
      result("invalid");
      return Status(StatusCode::INVALID_ARGUMENT, "the first message must carry the header");
    }
    const v1::DatasetUploadHeader header = msg.header();
    try {
      engine::validate_name("data set name", header.name());
    } catch (const std::exception& e) {
      result("invalid");
      return Status(StatusCode::INVALID_ARGUMENT, e.what());
    }
    // Compared unsigned: total_bytes is a uint64 and 2^64-1 must not wrap to -1 and pass.
    if (header.total_bytes() > static_cast<uint64_t>(o.max_dataset_bytes)) {
      result("too_large");
      return Status(StatusCode::RESOURCE_EXHAUSTED,
                    "total_bytes " + std::to_string(header.total_bytes()) +
                        " is above --max-dataset-bytes " + std::to_string(o.max_dataset_bytes));
    }
    if (store->tenant_dataset_bytes(tenant) + static_cast<int64_t>(header.total_bytes()) >
        o.tenant_storage_bytes) {
      result("quota");
      return Status(StatusCode::RESOURCE_EXHAUSTED,
                    "the tenant's data sets would exceed --tenant-storage-bytes " +
                        std::to_string(o.tenant_storage_bytes));
    }
    // gRPC's message limit (8 MiB) bounds each chunk; the header's sha256 is optional here.
    common::UploadAssembler assembler(header.total_bytes(), SIZE_MAX);
    std::string bytes;
    try {
      do {
        assembler.add(msg.data());
      } while (reader->Read(&msg));
      bytes = assembler.finish(header.sha256(), /*sha256_required=*/false);
    } catch (const std::invalid_argument&) {
      result("invalid");
      throw;  // run_rpc answers INVALID_ARGUMENT with the reason
    }
    const std::string& sha = assembler.sha256();
    ValidationOptions vo;
    vo.min_examples = o.min_examples;
    vo.max_example_tokens = o.max_example_tokens;
    vo.max_token_bytes = max_token_bytes;
    vo.count_tokens = [this](std::string_view t, int64_t limit) { return count_tokens(t, limit); };
    const ValidationReport report = validate_jsonl(bytes, vo);
    if (!report.ok()) {
      result("invalid");
      common::log_event(
          spdlog::level::info, "dataset.rejected",
          {{"request_id", rid}, {"tenant", tenant}, {"problems", report.total_problems}});
      return Status(StatusCode::INVALID_ARGUMENT, report.summary());
    }
    DatasetRecord d;
    d.id = random_id("ds-");
    d.tenant = tenant;
    d.name = header.name();
    d.path = (o.data_dir / "datasets" / tenant / (d.id + ".jsonl")).string();
    d.sha256 = sha;
    d.size_bytes = static_cast<int64_t>(bytes.size());
    d.examples = static_cast<int64_t>(report.examples.size());
    d.max_example_tokens = report.max_example_tokens;
    d.created_unix = now_ms() / 1000;
    try {
      std::lock_guard<std::mutex> lock(upload_mu);
      if (store->tenant_dataset_bytes(tenant) + d.size_bytes > o.tenant_storage_bytes) {
        result("quota");
        return Status(StatusCode::RESOURCE_EXHAUSTED,
                      "the tenant's data sets would exceed --tenant-storage-bytes");
      }
      engine::create_folders(fs::path(d.path).parent_path());
      engine::write_file_durably(d.path, bytes);  // removes its temporary file when it fails
      try {
        store->insert_dataset(d);
      } catch (...) {
        // No record, no file: the failed upload leaves the disk as it was.
        std::error_code ec;
        fs::remove(d.path, ec);
        throw;
      }
    } catch (...) {
      result("error");
      throw;  // run_rpc logs it and answers RESOURCE_EXHAUSTED (storage full) or INTERNAL
    }
    result("ok");
    common::log_event(spdlog::level::info, "dataset.uploaded",
                      {{"request_id", rid},
                       {"tenant", tenant},
                       {"dataset", d.id},
                       {"examples", d.examples},
                       {"bytes", d.size_bytes}});
    to_proto(d, reply);
    return Status::OK;
  }

  Status list_datasets(ServerContext* ctx, const v1::ListDatasetsRequest*,
                      v1::ListDatasetsResponse* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "ListDatasets", tenant); !st.ok()) return st;
    for (const auto& d : store->datasets(tenant)) to_proto(d, reply->add_datasets());
    return Status::OK;
  }

  Status get_dataset(ServerContext* ctx, const v1::GetDatasetRequest* req,
                    v1::DatasetInfo* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "GetDataset", tenant); !st.ok()) return st;
    auto d = store->dataset(tenant, req->id());
    if (!d) return Status(StatusCode::NOT_FOUND, "no data set " + req->id());
    to_proto(*d, reply);
    return Status::OK;
  }

  Status delete_dataset(ServerContext* ctx, const v1::DeleteDatasetRequest* req,
                       v1::DeleteDatasetResponse*) {
    std::string tenant;
    if (Status st = authenticate(ctx, "DeleteDataset", tenant); !st.ok()) return st;
    auto d = store->dataset(tenant, req->id());
    if (!d) return Status(StatusCode::NOT_FOUND, "no data set " + req->id());
    if (store->dataset_in_use(tenant, req->id())) {
      return Status(StatusCode::FAILED_PRECONDITION,
                    "a queued or running job uses data set " + req->id());
    }
    store->delete_dataset(tenant, req->id());
    std::error_code ec;
    fs::remove(d->path, ec);
    return Status::OK;
  }

  Status create_job(ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "CreateJob", tenant); !st.ok()) return st;
    if (stopping) return Status(StatusCode::UNAVAILABLE, "the service is stopping");
    std::string json;
    google::protobuf::util::JsonPrintOptions jo;
    jo.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(*req, &json, jo);
    // The request is bounded by gRPC's message size; its JSON form is parsed like any outside JSON.
    const nlohmann::json spec = engine::parse_bounded_json(json, kJobJsonLimits, "the job request");
    JobParams p;
    try {
      engine::validate_name("adapter_name", req->adapter_name());
      p = parse_job_params(spec);
    } catch (const std::exception& e) {
      return Status(StatusCode::INVALID_ARGUMENT, e.what());
    }
    auto ds = store->dataset(tenant, p.dataset_id);
    if (!ds) return Status(StatusCode::NOT_FOUND, "no data set " + p.dataset_id);
    int64_t train_examples = ds->examples;
    if (!p.validation_dataset_id.empty()) {
      if (!store->dataset(tenant, p.validation_dataset_id)) {
        return Status(StatusCode::NOT_FOUND, "no validation data set " + p.validation_dataset_id);
      }
    } else if (p.validation_split > 0) {
      train_examples -=
          std::max<int64_t>(1, static_cast<int64_t>(p.validation_split * ds->examples));
    }
    if (train_examples < o.min_examples) {
      return Status(StatusCode::INVALID_ARGUMENT,
                    "after the validation split " + std::to_string(train_examples) +
                        " training examples remain, fewer than the minimum of " +
                        std::to_string(o.min_examples));
    }
    JobRecord job;
    {
      // Limit check and insert under the same lock so two concurrent creates cannot both pass.
      static std::mutex create_mu;
      std::lock_guard<std::mutex> lock(create_mu);
      if (store->count_jobs(tenant, {JobState::kValidating, JobState::kQueued,
                                     JobState::kRunning}) >= o.max_active_jobs) {
        return Status(StatusCode::RESOURCE_EXHAUSTED,
                      "the tenant already has " + std::to_string(o.max_active_jobs) +
                          " queued or running jobs (--max-active-jobs)");
      }
      job.id = random_id("job-");
      job.tenant = tenant;
      job.state = JobState::kQueued;
      job.spec = spec;
      job.created_ms = now_ms();
      store->insert_job(job, "queued");
    }
    common::log_event(spdlog::level::info, "job.created",
                      {{"job", job.id}, {"tenant", tenant}, {"dataset", ds->id}});
    runner->refresh_state_gauge();
    runner->notify();
    bus.notify();
    to_proto(job, reply);
    return Status::OK;
  }

  Status find_job(const std::string& tenant, const std::string& id, JobRecord& out) {
    auto j = store->job(id);
    if (!j || j->tenant != tenant) return Status(StatusCode::NOT_FOUND, "no job " + id);
    out = std::move(*j);
    return Status::OK;
  }

  Status get_job(ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "GetJob", tenant); !st.ok()) return st;
    JobRecord j;
    if (Status st = find_job(tenant, req->id(), j); !st.ok()) return st;
    to_proto(j, reply);
    return Status::OK;
  }

  Status list_jobs(ServerContext* ctx, const v1::ListJobsRequest*,
                  v1::ListJobsResponse* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "ListJobs", tenant); !st.ok()) return st;
    for (const auto& j : store->jobs(tenant)) to_proto(j, reply->add_jobs());
    return Status::OK;
  }

  Status cancel_job(ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "CancelJob", tenant); !st.ok()) return st;
    JobRecord j;
    if (Status st = find_job(tenant, req->id(), j); !st.ok()) return st;
    if (!runner->cancel(j.id)) {
      return Status(StatusCode::FAILED_PRECONDITION,
                    std::string("job ") + j.id + " already " + state_name(j.state));
    }
    (void)find_job(tenant, req->id(), j);
    to_proto(j, reply);
    return Status::OK;
  }

  Status watch_job(ServerContext* ctx, const v1::WatchJobRequest* req,
                  grpc::ServerWriter<v1::JobEvent>* writer) {
    std::string tenant;
    if (Status st = authenticate(ctx, "WatchJob", tenant); !st.ok()) return st;
    JobRecord j;
    if (Status st = find_job(tenant, req->id(), j); !st.ok()) return st;
    int64_t seq = req->after_seq();
    uint64_t seen = bus.version();
    while (true) {
      // Read the state before the events: a terminal state seen here has all its events stored.
      auto job = store->job(req->id());
      const bool done = job && is_terminal(job->state);
      for (const auto& e : store->events(req->id(), seq)) {
        v1::JobEvent ev;
        to_proto(e, &ev);
        if (!writer->Write(ev)) return Status(StatusCode::CANCELLED, "the client went away");
        seq = e.seq;
      }
      if (done) return Status::OK;
      if (ctx->IsCancelled()) return Status(StatusCode::CANCELLED, "cancelled");
      if (stopping)
        return Status(StatusCode::UNAVAILABLE,
                      "the service is stopping; watch again after it restarts");
      seen = bus.wait(seen, std::chrono::milliseconds(500));
    }
  }

  // The RPCs: each runs its handler through run_rpc, the one place that maps exceptions to
  // statuses and counts failures.
  Status rpc(const char* method, const std::function<Status()>& handler) {
    return run_rpc(method, metrics->rpc_errors, handler);
  }
  Status UploadDataset(ServerContext* ctx, grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                       v1::DatasetInfo* reply) override {
    return rpc("UploadDataset", [&] { return upload_dataset(ctx, reader, reply); });
  }
  Status ListDatasets(ServerContext* ctx, const v1::ListDatasetsRequest* req,
                      v1::ListDatasetsResponse* reply) override {
    return rpc("ListDatasets", [&] { return list_datasets(ctx, req, reply); });
  }
  Status GetDataset(ServerContext* ctx, const v1::GetDatasetRequest* req,
                    v1::DatasetInfo* reply) override {
    return rpc("GetDataset", [&] { return get_dataset(ctx, req, reply); });
  }
  Status DeleteDataset(ServerContext* ctx, const v1::DeleteDatasetRequest* req,
                       v1::DeleteDatasetResponse* reply) override {
    return rpc("DeleteDataset", [&] { return delete_dataset(ctx, req, reply); });
  }
  Status CreateJob(ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* reply) override {
    return rpc("CreateJob", [&] { return create_job(ctx, req, reply); });
  }
  Status GetJob(ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* reply) override {
    return rpc("GetJob", [&] { return get_job(ctx, req, reply); });
  }
  Status ListJobs(ServerContext* ctx, const v1::ListJobsRequest* req,
                  v1::ListJobsResponse* reply) override {
    return rpc("ListJobs", [&] { return list_jobs(ctx, req, reply); });
  }
  Status CancelJob(ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* reply) override {
    return rpc("CancelJob", [&] { return cancel_job(ctx, req, reply); });
  }
  Status WatchJob(ServerContext* ctx, const v1::WatchJobRequest* req,
                  grpc::ServerWriter<v1::JobEvent>* writer) override {
    return rpc("WatchJob", [&] { return watch_job(ctx, req, writer); });
  }
};

TrainService::TrainService(TrainServiceOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->o = std::move(options);
}

TrainService::~TrainService() { stop(); }

void TrainService::start() {
  Impl& b = *impl_;
  const auto& o = b.o;
  b.tenants = std::make_unique<common::TenantRegistry>(common::TenantRegistry::from_file(o.service.tenants_file));
  b.auth = std::make_unique<common::GrpcAuthenticator>(*b.tenants);
  if (o.service.metrics_listen.empty()) {
    b.own_registry = std::make_unique<prometheus::Registry>();
    b.metrics = std::make_unique<TrainingMetrics>(*b.own_registry);
  } else {
    b.metrics_server = std::make_unique<common::MetricsServer>(o.service.metrics_listen);
    b.metrics = std::make_unique<TrainingMetrics>(b.metrics_server->registry());
  }
  common::LoadedModel loaded = common::load_model(o.service);
  b.model = std::move(loaded.model);
  b.tokenizer = std::move(loaded.tokenizer);
  for (int32_t id = 0; id < static_cast<int32_t>(b.tokenizer->vocab_size()); ++id) {
    b.max_token_bytes = std::max(b.max_token_bytes, b.tokenizer->token_bytes(id).size());
  }
  fs::create_directories(o.data_dir);
  // Writes a crash or a full disk interrupted: never referenced by the database.
  if (const int removed = engine::remove_temporary_files(o.data_dir); removed > 0) {
    common::log_event(spdlog::level::warn, "train.removed_temporary_files", {{"files", removed}});
  }
  b.store = std::make_unique<JobStore>(
      o.data_dir / "jobs.db",
      [](const std::string& table, const std::string& id, const std::string& error) {
        common::log_event(spdlog::level::err, "store.bad_record",
                          {{"table", table}, {"id", id}, {"error", error}});
      });

  client::ClientOptions co;
  co.address = o.serving_addr;
  co.api_key = o.serving_admin_key;
  co.timeout = std::chrono::seconds(120);
  auto serving_client = std::make_shared<client::Client>(co);
  PublishFn publish = [serving_client](const std::string& tenant, const std::string& name,
                                       const fs::path& file) {
    v1::AdapterInfo info;
    const grpc::Status st = serving_client->upload_adapter(
        name, engine::read_file(file.string()), &info, tenant);
    if (!st.ok()) {
      // Trying again helps when serving is down, busy or slow, not when it rejected the adapter.
      const auto c = st.error_code();
      const bool retryable = c != grpc::StatusCode::INVALID_ARGUMENT &&
                             c != grpc::StatusCode::FAILED_PRECONDITION &&
                             c != grpc::StatusCode::PERMISSION_DENIED &&
                             c != grpc::StatusCode::UNAUTHENTICATED;
      throw PublishError("statetune-serve UploadAdapter: " + client::status_code_name(c) + ": " +
                             st.error_message(),
                         client::status_code_name(c), retryable);
    }
    return info.current_version();
  };
  RunnerOptions ro;
  ro.data_dir = o.data_dir;
  ro.checkpoint_every = o.checkpoint_every;
  ro.log_every = o.log_every;
  ro.publish_retry_for = o.publish_retry_for;
  b.runner = std::make_unique<JobRunner>(*b.store, b.bus, *b.model, *b.tokenizer, publish, ro,
                                         b.metrics.get());
  b.runner->start();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(&b);
  builder.SetMaxReceiveMessageSize(8 << 20);
  b.server = common::listen_and_start(builder, o.service, &b.port);
  common::log_event(spdlog::level::info, "train.listening",
                    {{"port", b.port}, {"metrics_port", metrics_port()}, {"data_dir", o.data_dir.string()},
                     {"tls", o.service.tls()}});
  common::write_ready_file(o.service, b.port, metrics_port());
}

void TrainService::shutdown(const std::string& reason) {
  common::log_event(spdlog::level::info, "train.stopping", {{"reason", reason}});
  stop();
}

void TrainService::stop() {
  Impl& b = *impl_;
  if (b.stopping.exchange(true)) return;
  if (b.runner) b.runner->stop();
  b.bus.notify();
  if (b.server) b.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

int TrainService::port() const { return impl_->port; }
int TrainService::metrics_port() const {
  return impl_->metrics_server ? impl_->metrics_server->port() : 0;
}

}  // namespace statetune::training
