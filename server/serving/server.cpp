#include "server/serving/server.h"

#include <fmt/format.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <ATen/ATen.h>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "server/common/grpc_listen.h"
#include "server/common/grpc_status.h"
#include "server/common/logging.h"
#include "server/common/metrics.h"
#include "server/common/model_loading.h"
#include "server/common/status_codes.h"
#include "server/common/upload_assembler.h"
#include "server/engine/adapters/adapter_pool.h"
#include "server/engine/adapters/adapter_registry.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/runtime/generation.h"
#include "server/engine/runtime/scheduler.h"
#include "server/engine/text/tokenizer.h"
#include "server/serving/adapter_storage_mode.h"
#include "server/serving/http_routes.h"
#include "server/serving/model_server_protocol_metrics.h"
#include "server/serving/rpc_runner.h"
#include "server/serving/rpc_status_interceptor.h"
#include "server/serving/serving_metrics.h"
#include "server/serving/upload_limiter.h"
#include "statetune/v1/adapters.grpc.pb.h"
#include "statetune/v1/generation.grpc.pb.h"

namespace statetune::serving {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using engine::Clock;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;

namespace {

constexpr size_t kMaxUploadChunk = size_t{4} << 20;

// Everything that exists only once the model is loaded.
struct Backend {
  std::unique_ptr<engine::MambaModel> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::unique_ptr<engine::AdapterStorage> store;  // local folder or PostgreSQL (--database)
  std::unique_ptr<engine::AdapterPool> pool;
  std::unique_ptr<engine::AdapterRegistry> adapters;  // over store and pool; destroyed before them
  std::unique_ptr<engine::Scheduler> scheduler;
  std::unique_ptr<engine::TextGenerator> generator;
};

// State shared by the gRPC handlers.
struct Shared {
  ServerOptions options;
  std::optional<TenantRegistry> tenants;
  std::unique_ptr<ServingMetrics> metrics;
  std::unique_ptr<RpcRunner> rpc;
  std::unique_ptr<UploadLimiter> uploads;
  std::atomic<Backend*> backend{nullptr};
  std::atomic<bool> draining{false};

  Backend* ready() const { return draining.load() ? nullptr : backend.load(); }

  // The tenant an adapter call acts on: the caller's own, or (admin key only) the one it names, which
  // must be in the tenants file.
  Status scope(const Principal& p, const std::string& requested, std::string& tenant) const {
    if (p.admin) {
      if (requested.empty()) {
        return Status(StatusCode::INVALID_ARGUMENT, "the admin key must name the tenant to act on (`tenant`)");
      }
      engine::validate_name("tenant", requested);
      if (!tenants->has_tenant(requested)) {
        return Status(StatusCode::NOT_FOUND, "tenant '" + requested + "' is not in the tenants file");
      }
      tenant = requested;
    } else {
      if (!requested.empty() && requested != p.tenant) {
        return Status(StatusCode::PERMISSION_DENIED, "a tenant key may only act on its own adapters");
      }
      tenant = p.tenant;
    }
    return Status::OK;
  }
};

// A Generate request as the engine's facade takes it.
engine::TextGenerationRequest to_engine_request(const v1::GenerateRequest& req, const RpcCall& call) {
  engine::TextGenerationRequest g;
  g.request_id = call.request_id;
  g.tenant = call.tenant_label();
  if (req.has_adapter()) {
    g.adapter = req.adapter().name();
    if (!req.adapter().version().empty()) g.adapter_version = req.adapter().version();
  }
  if (req.has_token_ids()) {
    g.prompt_tokens.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
  } else if (req.prompt_case() == v1::GenerateRequest::kText) {
    g.prompt_text = req.text();
  }
  if (req.has_temperature()) g.temperature = req.temperature();
  g.top_k = req.top_k();
  if (req.has_top_p()) g.top_p = req.top_p();
  if (req.has_seed()) g.seed = req.seed();
  g.max_tokens = static_cast<int64_t>(req.max_tokens());
  if (req.has_stop_at_eos()) g.stop_at_eos = req.stop_at_eos();
  g.stop.assign(req.stop().begin(), req.stop().end());
  return g;
}

v1::FinishReason to_proto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case engine::FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    default: return v1::FINISH_REASON_CANCELLED;
  }
}

// gRPC's synchronous API has no callback for a client that went away or a deadline that passed, so
// while no token arrives the handler looks at ServerContext::IsCancelled() this often. Tokens and the
// finish wake it at once (the facade signals them).
constexpr auto kCancelCheckInterval = std::chrono::milliseconds(20);

class GenerationService final : public v1::Generation::Service {
 public:
  explicit GenerationService(Shared& shared) : s_(shared) {}

  Status Generate(ServerContext* ctx, const v1::GenerateRequest* req,
                  grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    return s_.rpc->run(
        ctx, "Generate", [&](const RpcCall& call) { return run(ctx, *req, writer, call); },
        [this](const RpcCall& call, const Status& st) {
          s_.metrics->request_finished(call.tenant_label(), common::status_code_name(st.error_code()));
        });
  }

 private:
  Status run(ServerContext* ctx, const v1::GenerateRequest& req, grpc::ServerWriter<v1::GenerateResponse>* writer,
             const RpcCall& call) {
    Backend* b = s_.ready();
    if (b == nullptr) {
      return Status(StatusCode::UNAVAILABLE,
                    s_.draining ? "the server is draining" : "the model is still loading; retry shortly");
    }
    if (static_cast<int64_t>(req.ByteSizeLong()) > s_.options.max_request_bytes) {
      return Status(StatusCode::INVALID_ARGUMENT, "the request is " + std::to_string(req.ByteSizeLong()) +
                                                      " bytes; --max-request-bytes is " +
                                                      std::to_string(s_.options.max_request_bytes));
    }
    if (call.principal.admin && req.has_adapter() && !req.adapter().name().empty()) {
      return Status(StatusCode::PERMISSION_DENIED, "the admin key has no adapters; generate with a tenant key");
    }
    // Invalid requests, a missing adapter, QueueFull and NotAccepting throw; RpcRunner maps them.
    std::unique_ptr<engine::GenerationStream> stream = b->generator->start(to_engine_request(req, call));
    const std::string tenant = call.tenant_label();
    const std::string adapter = req.has_adapter() ? req.adapter().name() : "";
    common::log_event(spdlog::level::debug, "generate.start",
                      {{"request_id", call.request_id}, {"tenant", tenant}, {"prompt_tokens", stream->prompt_tokens()},
                       {"adapter", adapter}, {"version", stream->adapter_version()}});

    bool client_gone = false;
    const engine::GenerationFinish finish = forward(ctx, *stream, writer, client_gone);
    const engine::GenerationUsage& usage = finish.usage;
    s_.metrics->queue_time(usage.queue_seconds);
    s_.metrics->request_duration(tenant, usage.total_seconds);
    s_.metrics->tokens(tenant, usage.prompt_tokens, usage.completion_tokens);
    if (finish.reason == engine::FinishReason::kError) {
      Status st = common::to_grpc_status(finish.error_kind, finish.error, call.request_id);
      if (st.error_code() == StatusCode::INTERNAL) {
        common::log_event(spdlog::level::err, "generate.engine_error",
                          {{"request_id", call.request_id}, {"message", finish.error}});
      }
      return st;
    }
    if (client_gone || finish.cancelled_by_caller) {
      return Status(ctx->deadline() <= std::chrono::system_clock::now() ? StatusCode::DEADLINE_EXCEEDED
                                                                       : StatusCode::CANCELLED,
                    "the client cancelled the request");
    }
    writer->Write(done_message(finish, stream->adapter_version(), call.request_id));
    common::log_event(spdlog::level::info, "generate.done",
                      {{"request_id", call.request_id}, {"tenant", tenant}, {"adapter", adapter},
                       {"version", stream->adapter_version()}, {"finish", engine::finish_reason_name(finish.reason)},
                       {"prompt_tokens", usage.prompt_tokens}, {"completion_tokens", usage.completion_tokens},
                       {"ttft_s", usage.ttft_seconds}, {"total_s", usage.total_seconds}});
    return Status::OK;
  }

  // Writes every delta as a chunk until the finish. A client that went away, or whose deadline
  // passed, cancels the request (its scheduler row is freed at the next step); the finish still comes.
  static engine::GenerationFinish forward(ServerContext* ctx, engine::GenerationStream& stream,
                                          grpc::ServerWriter<v1::GenerateResponse>* writer, bool& client_gone) {
    while (true) {
      std::optional<engine::GenerationEvent> event = stream.next(engine::Clock::now() + kCancelCheckInterval);
      if (event && event->finish) return std::move(*event->finish);
      if (event && !client_gone) {
        v1::GenerateResponse resp;
        auto* chunk = resp.mutable_chunk();
        chunk->set_text(std::move(event->delta->text));
        for (int64_t id : event->delta->token_ids) chunk->add_token_ids(id);
        client_gone = !writer->Write(resp);
      }
      if (!client_gone) client_gone = ctx->IsCancelled();
      if (client_gone) stream.cancel();  // idempotent
    }
  }

  static v1::GenerateResponse done_message(const engine::GenerationFinish& finish, const std::string& adapter_version,
                                           const std::string& request_id) {
    v1::GenerateResponse resp;
    auto* done = resp.mutable_done();
    done->set_finish_reason(to_proto(finish.reason));
    auto* u = done->mutable_usage();
    u->set_prompt_tokens(static_cast<uint32_t>(finish.usage.prompt_tokens));
    u->set_completion_tokens(static_cast<uint32_t>(finish.usage.completion_tokens));
    u->set_queue_seconds(finish.usage.queue_seconds);
    u->set_time_to_first_token_seconds(finish.usage.ttft_seconds);
    u->set_total_seconds(finish.usage.total_seconds);
    done->set_stop_sequence(finish.stop_sequence);
    done->set_adapter_version(adapter_version);
    done->set_request_id(request_id);
    return resp;
  }

  Shared& s_;
};

void fill_base(const engine::ModelFingerprint& f, v1::BaseModel* out) {
  out->set_architecture(f.architecture);
  out->set_d_model(f.d_model);
  out->set_n_layer(f.n_layer);
  out->set_d_inner(f.d_inner);
  out->set_d_state(f.d_state);
  out->set_vocab_size(f.vocab_size);
  out->set_weights_sha256(f.weights_sha256);
}

void fill_version(const engine::StoredAdapterInfo& info, v1::AdapterVersion* out) {
  out->set_version(info.version);
  out->set_size_bytes(info.size_bytes);
  out->set_created_unix(info.created_unix);
  for (const auto& m : info.methods) out->add_methods(m);
  if (info.extra_metadata.is_object() && info.extra_metadata.contains("eval") &&
      info.extra_metadata["eval"].is_object()) {
    for (const auto& [k, v] : info.extra_metadata["eval"].items()) {
      if (v.is_number()) (*out->mutable_eval_metrics())[k] = v.get<double>();
    }
  }
  out->set_metadata_json(info.extra_metadata.dump());
  out->set_current(info.current);
}

class AdaptersService final : public v1::Adapters::Service {
 public:
  explicit AdaptersService(Shared& shared) : s_(shared) {}

  Status UploadAdapter(ServerContext* ctx, grpc::ServerReader<v1::UploadAdapterRequest>* reader,
                       v1::AdapterInfo* reply) override {
    std::string tenant;  // known once the header is read; uploads are counted per tenant
    return s_.rpc->run(
        ctx, "UploadAdapter", [&](const RpcCall& call) { return upload(ctx, reader, reply, call, tenant); },
        [this, &tenant](const RpcCall&, const Status& st) {
          if (!tenant.empty()) s_.metrics->upload(tenant, common::status_code_name(st.error_code()));
        });
  }

  Status ListAdapters(ServerContext* ctx, const v1::ListAdaptersRequest* req,
                      v1::ListAdaptersResponse* reply) override {
    return s_.rpc->run(ctx, "ListAdapters", [&](const RpcCall& call) {
      Backend* b = s_.ready();
      if (b == nullptr) return unavailable();
      std::string tenant;
      if (Status st = s_.scope(call.principal, req->tenant(), tenant); !st.ok()) return st;
      for (const auto& info : b->store->list(tenant)) {
        fill_info(*b, tenant, info.name, /*all_versions=*/false, reply->add_adapters());
      }
      return Status::OK;
    });
  }

  Status GetAdapter(ServerContext* ctx, const v1::GetAdapterRequest* req, v1::AdapterInfo* reply) override {
    return s_.rpc->run(ctx, "GetAdapter", [&](const RpcCall& call) {
      Backend* b = s_.ready();
      if (b == nullptr) return unavailable();
      std::string tenant;
      if (Status st = s_.scope(call.principal, req->tenant(), tenant); !st.ok()) return st;
      return fill_info(*b, tenant, req->name(), /*all_versions=*/true, reply);
    });
  }

  Status DeleteAdapter(ServerContext* ctx, const v1::DeleteAdapterRequest* req,
                       v1::DeleteAdapterResponse* reply) override {
    return s_.rpc->run(ctx, "DeleteAdapter", [&](const RpcCall& call) {
      Backend* b = s_.ready();
      if (b == nullptr) return unavailable();
      std::string tenant;
      if (Status st = s_.scope(call.principal, req->tenant(), tenant); !st.ok()) return st;
      // No versions: AdapterNotFound (NOT_FOUND); the storage unreachable: UNAVAILABLE.
      const size_t deleted = b->adapters->remove(tenant, req->name());
      reply->set_versions_deleted(static_cast<uint32_t>(deleted));
      common::log_event(spdlog::level::info, "adapter.deleted",
                        {{"tenant", tenant}, {"adapter", req->name()}, {"versions", deleted}});
      return Status::OK;
    });
  }

 private:
  static Status unavailable() { return Status(StatusCode::UNAVAILABLE, "the server is loading or draining"); }

  // The largest upload accepted: --max-upload-bytes, and never more than a valid adapter file for the
  // served base can be, so an oversized upload is refused from its header, before its bytes arrive.
  // An adapter larger than --max-upload-bytes or than any valid adapter file for this base model is
  // refused from its header, before its bytes are read.
  Status check_upload_size(const Backend& b, uint64_t total_bytes) const {
    const auto limit = static_cast<uint64_t>(std::min<int64_t>(s_.options.max_upload_bytes, b.store->max_file_bytes()));
    if (total_bytes == 0) return Status(StatusCode::INVALID_ARGUMENT, "header.total_bytes is 0");
    if (total_bytes <= limit) return Status::OK;
    return Status(StatusCode::RESOURCE_EXHAUSTED,
                  "the adapter is " + std::to_string(total_bytes) + " bytes; the limit is " + std::to_string(limit) +
                      " (--max-upload-bytes " + std::to_string(s_.options.max_upload_bytes) +
                      ", largest adapter file for this base model " + std::to_string(b.store->max_file_bytes()) + ")");
  }

  Status upload(ServerContext* ctx, grpc::ServerReader<v1::UploadAdapterRequest>* reader, v1::AdapterInfo* reply,
                const RpcCall& call, std::string& tenant) {
    Backend* b = s_.ready();
    if (b == nullptr) return unavailable();
    const auto t0 = Clock::now();
    // Admitted before the first read: a stream that never sends its header holds a place (and a
    // thread) too, and the idle deadline covers it.
    std::string refusal;
    auto slot = s_.uploads->admit(call.tenant_label(), ctx, &refusal);
    if (!slot) return Status(StatusCode::RESOURCE_EXHAUSTED, refusal);
    v1::UploadAdapterRequest msg;
    const Status no_header(StatusCode::INVALID_ARGUMENT, "the first upload message must carry `header`");
    if (!slot->read(reader, &msg)) return slot->idle_cancelled() ? slot->idle_status() : no_header;
    if (!msg.has_header()) return no_header;
    const v1::UploadHeader header = msg.header();
    if (Status st = s_.scope(call.principal, header.tenant(), tenant); !st.ok()) return st;
    engine::validate_name("adapter", header.name());
    if (Status st = check_upload_size(*b, header.total_bytes()); !st.ok()) return st;
    // Bad chunks, sizes and hashes throw std::invalid_argument (INVALID_ARGUMENT).
    common::UploadAssembler assembler(header.total_bytes(), kMaxUploadChunk);  // at most the limit above
    if (!slot->receive(reader, msg, assembler)) return slot->idle_status();
    const std::string data = assembler.finish(header.sha256(), /*sha256_required=*/true);
    const auto received = Clock::now();
    // Validate, store, make current, pre-warm (AdapterRegistry). A rejected file throws
    // std::invalid_argument (INVALID_ARGUMENT), a quota AdapterQuotaExceeded (RESOURCE_EXHAUSTED), an
    // unreachable database AdapterStorageUnavailable (UNAVAILABLE); RpcRunner maps them.
    const engine::AdapterUpload up = b->adapters->upload(tenant, header.name(), data);
    auto ms = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    common::log_event(spdlog::level::info, "adapter.uploaded",
                      {{"tenant", tenant}, {"adapter", header.name()}, {"version", up.version},
                       {"bytes", data.size()}, {"warmed", up.warmed}, {"receive_ms", ms(t0, received)},
                       {"store_ms", up.store_ms}, {"warm_ms", up.warm_ms}, {"seconds", ms(t0, Clock::now()) / 1000}});
    Status st = fill_info(*b, tenant, header.name(), /*all_versions=*/true, reply);
    // The version this upload created, not whichever a concurrent upload of the name made current.
    if (st.ok()) reply->set_current_version(up.version);
    return st;
  }

  Status fill_info(Backend& b, const std::string& tenant, const std::string& name, bool all_versions,
                   v1::AdapterInfo* out) {
    auto current = b.store->get(tenant, name);  // validates the name
    if (!current) return Status(StatusCode::NOT_FOUND, "adapter '" + name + "' not found");
    out->set_tenant(tenant);
    out->set_name(name);
    out->set_current_version(current->version);
    if (all_versions) {
      for (const auto& v : b.store->versions(tenant, name)) fill_version(v, out->add_versions());
    } else {
      fill_version(*current, out->add_versions());
    }
    fill_base(b.store->base(), out->mutable_base());
    return Status::OK;
  }

  Shared& s_;
};

int64_t rpc_thread_limit(const ServerOptions& o) {
  if (o.max_rpc_threads > 0) return o.max_rpc_threads;
  // Every running or queued Generate stream and every admitted upload holds a thread, plus room for
  // the short calls (health, list, get, delete) and gRPC's own pollers.
  return o.max_batch + o.queue_size + o.max_uploads + 32;
}

}  // namespace

struct ServingServer::Impl {
  Shared shared;
  std::unique_ptr<ServingHttpContext> http_context;
  std::unique_ptr<http::HttpServer> http;
  std::unique_ptr<common::MetricsServer> metrics_server;
  std::unique_ptr<ModelServerProtocolMetrics> protocol_metrics;
  std::unique_ptr<GenerationService> generation;
  std::unique_ptr<AdaptersService> adapters;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::unique_ptr<Backend> backend;
  std::thread refresher;
  std::mutex refresher_mu;
  std::condition_variable refresher_cv;
  bool stop_refresher = false;
  bool drained = false;

  void set_health(bool serving) {
    if (auto* h = server->GetHealthCheckService()) {
      h->SetServingStatus("", serving);
      h->SetServingStatus("statetune.v1.Generation", serving);
      h->SetServingStatus("statetune.v1.Adapters", serving);
    }
    shared.metrics->set_up(serving);
  }

  void refresh_metrics() {
    shared.metrics->set_uploads_running(shared.uploads->running());
    Backend* b = shared.backend.load();
    if (b == nullptr) return;
    const auto counts = b->scheduler->counts();
    shared.metrics->set_load(counts.running, counts.waiting, counts.running_by_adapter, counts.waiting_by_adapter);
    const auto st = b->pool->stats();
    protocol_metrics->update(counts.running, b->scheduler->options().max_batch, counts.running_by_adapter,
                             counts.waiting_by_adapter, st.capacity,
                             std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
    PoolSnapshot snap;
    snap.capacity = st.capacity;
    snap.resident = st.resident;
    snap.pinned = st.pinned;
    snap.loads = st.loads;
    snap.load_failures = st.load_failures;
    snap.evictions = st.evictions;
    snap.total_load_seconds = st.total_load_seconds;
    shared.metrics->set_pool(snap);
    const auto ss = b->store->stats();
    shared.metrics->set_storage(StorageSnapshot{ss.adapters_known, ss.resyncs, ss.unavailable_errors, ss.connections,
                                                ss.listening, ss.connections_in_use, ss.connections_idle,
                                                ss.statement_errors});
  }
};

ServingServer::ServingServer(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->shared.options = std::move(options);
}

ServingServer::~ServingServer() {
  if (impl_->server && !impl_->drained) drain();
}

void ServingServer::start() {
  Impl& m = *impl_;
  const ServerOptions& o = m.shared.options;
  if (o.service.tenants_file.empty()) throw std::runtime_error("--tenants-file is required");
  m.shared.tenants = TenantRegistry::from_file(o.service.tenants_file);
  UploadLimits upload_limits;
  upload_limits.max_uploads = o.max_uploads;
  upload_limits.max_uploads_per_tenant = o.max_uploads_per_tenant;
  upload_limits.idle_timeout = o.upload_idle_timeout;
  m.shared.uploads = std::make_unique<UploadLimiter>(upload_limits);
  if (!o.service.metrics_listen.empty()) {
    m.metrics_server = std::make_unique<common::MetricsServer>(o.service.metrics_listen);
    m.shared.metrics = std::make_unique<ServingMetrics>(m.metrics_server->registry());
    m.protocol_metrics = std::make_unique<ModelServerProtocolMetrics>(m.metrics_server->registry());
  } else {
    static auto unused_registry = std::make_shared<prometheus::Registry>();
    m.shared.metrics = std::make_unique<ServingMetrics>(*unused_registry);
    m.protocol_metrics = std::make_unique<ModelServerProtocolMetrics>(*unused_registry);
  }

  m.shared.rpc = std::make_unique<RpcRunner>(*m.shared.tenants);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  m.generation = std::make_unique<GenerationService>(m.shared);
  m.adapters = std::make_unique<AdaptersService>(m.shared);
  grpc::ServerBuilder builder;
  // Uploads stream 4 MiB chunks; Generate requests are checked against --max-request-bytes by hand so
  // the client gets INVALID_ARGUMENT naming the limit rather than gRPC's own RESOURCE_EXHAUSTED.
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::max<int64_t>(o.max_request_bytes, kMaxUploadChunk) + (64 << 10)));
  // The synchronous server runs every open call on a thread of its own; cap them so that no number
  // of open streams can make it start more (beyond the cap, new calls are refused).
  grpc::ResourceQuota quota("statetune-serve");
  quota.SetMaxThreads(static_cast<int>(rpc_thread_limit(o)));
  builder.SetResourceQuota(quota);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcStatusInterceptorFactory>(*m.shared.metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(m.generation.get());
  builder.RegisterService(m.adapters.get());
  m.server = common::listen_and_start(builder, o.service, &m.port);
  m.set_health(false);
  if (!o.http.listen.empty()) {
    // The HTTP routes see the loaded model through this view only: null while loading or draining.
    const Shared* shared = &m.shared;
    m.http_context.reset(new ServingHttpContext{
        *m.shared.tenants, *m.shared.metrics, o.model_id, o.chat_template, o.max_request_bytes, [shared] {
          ServingBackendView view;
          if (Backend* b = shared->ready()) {
            view.generator = b->generator.get();
            view.store = b->store.get();
          } else {
            view.unavailable = shared->draining ? "the server is draining" : "the model is still loading; retry shortly";
          }
          return view;
        }});
    m.http = std::make_unique<http::HttpServer>(o.http);
    add_serving_routes(m.http->routes(), *m.http_context);
    if (o.http.serve_metrics) {
      if (!m.metrics_server) throw std::runtime_error("--http-metrics needs --metrics-listen (it serves the same registry)");
      common::add_metrics_route(m.http->routes(), m.metrics_server->shared_registry());
    }
    m.http->start();
  }
  common::log_event(spdlog::level::info, "server.listening",
                    {{"grpc_port", m.port}, {"metrics_port", metrics_port()}, {"http_port", http_port()},
                     {"tls", o.service.tls()}});
  common::write_ready_file(o.service, m.port, metrics_port(), http_port());
}

void ServingServer::load() {
  Impl& m = *impl_;
  const ServerOptions& o = m.shared.options;
  const auto t0 = Clock::now();
  auto b = std::make_unique<Backend>();
  common::LoadedModel loaded = common::load_model(o.service);
  b->model = std::move(loaded.model);
  b->tokenizer = std::move(loaded.tokenizer);
  b->store = open_adapter_storage(o, b->model->fingerprint());
  b->store->set_notify_lag_observer([metrics = m.shared.metrics.get()](double s) { metrics->notify_lag(s); });
  engine::AdapterPoolOptions po;
  po.device = loaded.device;
  po.budget_bytes = o.adapter_pool_bytes;
  po.max_slots = o.adapter_slots > 0 ? o.adapter_slots + 1 : 0;
  b->pool = std::make_unique<engine::AdapterPool>(b->model->fingerprint(), po);
  b->adapters = std::make_unique<engine::AdapterRegistry>(*b->store, *b->pool);
  engine::SchedulerOptions so;
  so.max_batch = o.max_batch;
  so.decode_path = o.cuda_graphs ? engine::DecodePath::kCudaGraphs : engine::DecodePath::kDirect;
  so.max_waiting = o.queue_size;
  so.max_prefill_tokens = std::max(o.max_prefill_tokens, o.max_prompt_tokens);
  so.sample_vocab = std::min<int64_t>(b->model->config().vocab_size, static_cast<int64_t>(b->tokenizer->vocab_size()));
  ServingMetrics* metrics = m.shared.metrics.get();
  b->scheduler = std::make_unique<engine::Scheduler>(*b->model, *b->pool, so, [metrics](const engine::StepInfo& s) {
    if (s.batch_size > 0) metrics->batch(s.batch_size);
  });
  engine::GenerationLimits limits;
  limits.max_prompt_tokens = o.max_prompt_tokens;
  limits.max_new_tokens = o.max_new_tokens;
  engine::TextGenerator::Observer observer;
  observer.first_token = [metrics](const std::string& tenant, double s) { metrics->first_token(tenant, s); };
  observer.inter_token = [metrics](double s) { metrics->inter_token(s); };
  b->generator = std::make_unique<engine::TextGenerator>(*b->scheduler, *b->tokenizer, *b->adapters,
                                                         b->model->config().vocab_size, limits, observer);
  m.backend = std::move(b);
  m.shared.backend.store(m.backend.get());
  m.refresher = std::thread([&m] {
    std::unique_lock<std::mutex> lock(m.refresher_mu);
    while (!m.stop_refresher) {
      lock.unlock();
      m.refresh_metrics();
      lock.lock();
      m.refresher_cv.wait_for(lock, std::chrono::milliseconds(250));
    }
  });
  m.set_health(true);
  size_t adapters = 0;
  const auto tenants = m.backend->store->tenants();
  for (const auto& t : tenants) adapters += m.backend->store->list(t).size();
  common::log_event(spdlog::level::info, "server.serving",
                    {{"model", loaded.model_dir.string()}, {"tenants", tenants.size()}, {"adapters", adapters},
                     {"slots", m.backend->pool->capacity()}, {"max_batch", o.max_batch},
                     {"load_seconds", std::chrono::duration<double>(Clock::now() - t0).count()}});
}

int64_t ServingServer::drain() {
  Impl& m = *impl_;
  if (m.drained) return 0;
  m.drained = true;
  m.shared.draining = true;
  if (m.server) m.set_health(false);
  int64_t cancelled = 0;
  if (m.backend) {
    cancelled = m.backend->scheduler->drain(Clock::now() + m.shared.options.drain_timeout);
  }
  // Every HTTP request has finished above (or was refused: draining); stop() joins the handler threads,
  // so no stream outlives the scheduler.
  if (m.http) m.http->stop();
  if (m.server) {
    // Handlers return as soon as their requests finished above; give stragglers a moment.
    m.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    m.server->Wait();
  }
  {
    std::lock_guard<std::mutex> lock(m.refresher_mu);
    m.stop_refresher = true;
  }
  m.refresher_cv.notify_all();
  if (m.refresher.joinable()) m.refresher.join();
  m.shared.backend.store(nullptr);
  if (m.backend) {
    m.backend->generator.reset();
    m.backend->scheduler.reset();
  }
  common::log_event(spdlog::level::info, "server.stopped", {{"cancelled", cancelled}});
  return cancelled;
}

void ServingServer::shutdown(const std::string& reason) {
  common::log_event(spdlog::level::info, "server.draining", {{"reason", reason}});
  drain();
}

int ServingServer::port() const { return impl_->port; }
int ServingServer::http_port() const { return impl_->http ? impl_->http->port() : 0; }
int ServingServer::metrics_port() const { return impl_->metrics_server ? impl_->metrics_server->port() : 0; }

}  // namespace statetune::serving
