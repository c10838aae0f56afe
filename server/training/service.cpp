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
#include "server/training/http_routes.h"
#include "server/training/training_core.h"
#include "server/training/job_runner.h"
#include "server/training/job_store.h"
#include "server/training/rpc_status.h"
#include "server/storage/postgres/pg_job_store.h"
#include "server/storage/postgres/schema.h"
#include "statetune/v1/training.grpc.pb.h"

namespace statetune::training {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;

namespace {

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
  } else if (e.type == "checkpoint") {
    auto* c = out->mutable_checkpoint();
    c->set_step(p.value("step", int64_t{0}));
    c->set_train_loss(p.value("train_loss", 0.0));
    c->set_val_loss(p.value("val_loss", 0.0));
    c->set_val_token_accuracy(p.value("val_token_accuracy", 0.0));
  } else if (e.type == "error") {
    auto* er = out->mutable_error();
    er->set_code(p.value("code", ""));
    er->set_message(p.value("message", ""));
    er->set_line(p.value("line", int64_t{0}));
  } else {
    out->set_state_change(p.value("message", ""));
  }
}

// hostname/pid/random: unique per process, readable in the job table's lease_owner.
std::string worker_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return std::string(host) + "/" + std::to_string(::getpid()) + "/" + random_id("");
}

std::unique_ptr<JobStore> open_shared_store(const TrainServiceOptions& o, const engine::ModelFingerprint& base,
                                            JobStore::BadRecordFn bad_record, storage::PgJobStore** shared) {
  storage::DatabaseOptions dbo;
  dbo.url = o.database.url;
  dbo.password_file = o.database.password_file;
  dbo.pool_size = static_cast<int>(o.database.pool_size);
  auto db = std::make_shared<storage::Database>(dbo);
  int applied = 0;
  try {
    // A worker that starts before its database (a rollout, a failover) waits for it.
    storage::retry_while_unavailable(*db, "migrating the job database", o.database.start_timeout,
                                     [&] { applied += db->migrate(storage::statetune_migrations()); });
  } catch (const std::exception& e) {
    throw std::runtime_error("the job database " + db->describe() + ": " + storage::safe_message(e));
  }
  storage::PgJobStoreOptions so;
  so.datasets_dir = o.data_dir / "datasets";
  so.base = base;
  so.quota = o.adapter_quota;
  so.tenant_storage_bytes = o.tenant_storage_bytes;
  so.max_active_jobs = o.max_active_jobs;
  auto store = std::make_unique<storage::PgJobStore>(db, so, std::move(bad_record));
  *shared = store.get();
  common::log_event(spdlog::level::info, "train.shared",
                    {{"database", db->describe()}, {"migrations_applied", applied}, {"pool_size", dbo.pool_size},
                     {"lease_ms", o.lease.count()}});
  return store;
}

}  // namespace

struct TrainService::Impl final : public v1::Training::Service {
  TrainServiceOptions o;
  std::unique_ptr<common::TenantRegistry> tenants;
  std::unique_ptr<common::GrpcAuthenticator> auth;
  std::unique_ptr<engine::MambaModel> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::unique_ptr<JobStore> store;
  storage::PgJobStore* shared_store = nullptr;  // the store, in the shared mode
  EventBus bus;
  std::unique_ptr<common::MetricsServer> metrics_server;
  std::unique_ptr<prometheus::Registry> own_registry;
  std::unique_ptr<TrainingMetrics> metrics;
  std::unique_ptr<JobRunner> runner;
  std::unique_ptr<grpc::Server> server;
  std::atomic<bool> stopping{false};
  int port = 0;
  std::unique_ptr<TrainingCore> core;
  std::unique_ptr<TrainingHttpContext> http_context;
  std::unique_ptr<http::HttpServer> http;

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

  Status upload_dataset(ServerContext* ctx, grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                       v1::DatasetInfo* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "UploadDataset", tenant); !st.ok()) return st;
    auto result = [&](const char* r) { metrics->datasets.Add({{"result", r}}).Increment(); };
    v1::UploadDatasetRequest msg;
    if (!reader->Read(&msg) || !msg.has_header()) {
      result("invalid");
      return Status(StatusCode::INVALID_ARGUMENT, "the first message must carry the header");
    }
    const v1::DatasetUploadHeader header = msg.header();
    core->check_upload(tenant, header.name(), header.total_bytes());
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
    to_proto(core->store_dataset(tenant, header.name(), bytes, assembler.sha256()), reply);
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
    to_proto(core->dataset(tenant, req->id()), reply);
    return Status::OK;
  }

  Status delete_dataset(ServerContext* ctx, const v1::DeleteDatasetRequest* req,
                       v1::DeleteDatasetResponse*) {
    std::string tenant;
    if (Status st = authenticate(ctx, "DeleteDataset", tenant); !st.ok()) return st;
    core->delete_dataset(tenant, req->id());
    return Status::OK;
  }

  Status create_job(ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "CreateJob", tenant); !st.ok()) return st;
    std::string json;
    google::protobuf::util::JsonPrintOptions jo;
    jo.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(*req, &json, jo);
    // The request is bounded by gRPC's message size; its JSON form is parsed like any outside JSON.
    const nlohmann::json spec = engine::parse_bounded_json(json, kJobJsonLimits, "the job request");
    to_proto(core->create_job(tenant, spec), reply);
    return Status::OK;
  }

  Status get_job(ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* reply) {
    std::string tenant;
    if (Status st = authenticate(ctx, "GetJob", tenant); !st.ok()) return st;
    to_proto(core->job(tenant, req->id()), reply);
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
    to_proto(core->cancel_job(tenant, req->id()), reply);
    return Status::OK;
  }

  Status watch_job(ServerContext* ctx, const v1::WatchJobRequest* req,
                  grpc::ServerWriter<v1::JobEvent>* writer) {
    std::string tenant;
    if (Status st = authenticate(ctx, "WatchJob", tenant); !st.ok()) return st;
    (void)core->job(tenant, req->id());  // another tenant's job is not found
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
  fs::create_directories(o.data_dir);
  // Writes a crash or a full disk interrupted: never referenced by the database.
  if (const int removed = engine::remove_temporary_files(o.data_dir); removed > 0) {
    common::log_event(spdlog::level::warn, "train.removed_temporary_files", {{"files", removed}});
  }
  JobStore::BadRecordFn bad_record = [](const std::string& table, const std::string& id,
                                        const std::string& error) {
    common::log_event(spdlog::level::err, "store.bad_record",
                      {{"table", table}, {"id", id}, {"error", error}});
  };
  if (o.database.url.empty()) {
    b.store = std::make_unique<SqliteJobStore>(o.data_dir / "jobs.db", bad_record);
  } else {
    b.store = open_shared_store(o, b.model->fingerprint(), bad_record, &b.shared_store);
  }

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
  ro.worker_id = worker_id();
  ro.lease = o.lease;
  ro.data_dir = o.data_dir;
  ro.checkpoint_every = o.checkpoint_every;
  ro.log_every = o.log_every;
  ro.publish_retry_for = o.publish_retry_for;
  b.runner = std::make_unique<JobRunner>(*b.store, b.shared_store, b.bus, *b.model, *b.tokenizer, publish,
                                         ro, b.metrics.get());
  b.runner->start();
  if (b.shared_store) {
    // Another replica's event (or job) wakes this one's WatchJob streams and its idle worker.
    b.shared_store->set_event_listener([&b] {
      b.bus.notify();
      b.runner->notify();
    });
  }
  b.core = std::make_unique<TrainingCore>(b.o, *b.store, *b.runner, b.bus, *b.metrics, *b.tokenizer);
  if (!o.http.listen.empty()) {
    b.http = std::make_unique<http::HttpServer>(o.http);
    b.http_context.reset(
        new TrainingHttpContext{*b.core, *b.store, *b.tenants, o.model_id, o.chat_template, b.metrics->rpc_errors});
    add_training_routes(b.http->routes(), *b.http_context);
    if (o.http.serve_metrics) {
      if (!b.metrics_server) throw std::runtime_error("--http-metrics needs --metrics-listen (it serves the same registry)");
      common::add_metrics_route(b.http->routes(), b.metrics_server->shared_registry());
    }
    b.http->start();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(&b);
  builder.SetMaxReceiveMessageSize(8 << 20);
  b.server = common::listen_and_start(builder, o.service, &b.port);
  common::log_event(spdlog::level::info, "train.listening",
                    {{"port", b.port}, {"metrics_port", metrics_port()}, {"http_port", http_port()},
                     {"data_dir", o.data_dir.string()}, {"tls", o.service.tls()}});
  common::write_ready_file(o.service, b.port, metrics_port(), http_port());
}

void TrainService::shutdown(const std::string& reason) {
  common::log_event(spdlog::level::info, "train.stopping", {{"reason", reason}});
  stop();
}

void TrainService::stop() {
  Impl& b = *impl_;
  if (b.stopping.exchange(true)) return;
  if (b.core) b.core->set_stopping();
  if (b.http) b.http->stop();
  if (b.runner) b.runner->stop();
  if (b.shared_store) b.shared_store->set_event_listener({});  // before the runner and bus go
  b.bus.notify();
  if (b.server) b.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

int TrainService::port() const { return impl_->port; }
int TrainService::http_port() const { return impl_->http ? impl_->http->port() : 0; }
int TrainService::metrics_port() const {
  return impl_->metrics_server ? impl_->metrics_server->port() : 0;
}

}  // namespace statetune::training
