#include "server/training/http_routes.h"

#include <algorithm>

#include "server/engine/adapters/adapter_id.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/trainer/adapter_trainer.h"
#include "server/http/api_error.h"
#include "server/http/bearer_auth.h"
#include "server/http/json_body.h"
#include "server/training/chat_dataset.h"
#include "server/training/job_params.h"
#include "server/engine/util/storage_error.h"

namespace statetune::training {
namespace {

using http::ApiError;
using http::invalid_request;
using nlohmann::json;

// Job request bodies are small; the limit only stops a hostile document.
const engine::JsonLimits kJobBodyLimits{size_t{64} << 10, 8};
constexpr int64_t kDefaultListLimit = 20, kMaxListLimit = 100;

// The one mapping of the training service's refusals to HTTP.
std::optional<ApiError> map_training_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const TrainingError& e) {
    switch (e.kind()) {
      case TrainingError::Kind::kNotFound: return http::not_found(e.what());
      case TrainingError::Kind::kFailedPrecondition: return invalid_request(e.what(), "", "invalid_state");
      case TrainingError::Kind::kResourceExhausted: return ApiError(429, "rate_limit_error", e.what(), "", "quota_exceeded");
      case TrainingError::Kind::kUnavailable: return ApiError(503, "service_unavailable_error", e.what());
      default: return std::nullopt;  // an internal error, logged by respond()
    }
  } catch (const engine::StorageError& e) {
    // what() may name server paths: only said whether it was full.
    if (e.full()) return ApiError(507, "server_error", "the training service's storage is full; nothing was changed");
    return std::nullopt;  // an internal error, logged by respond()
  } catch (...) {
  }
  return std::nullopt;
}

const char* openai_status(JobState s) {
  switch (s) {
    case JobState::kValidating: return "validating_files";
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "failed";
}

json or_null(const std::string& s) { return s.empty() ? json() : json(s); }

json file_object(const DatasetRecord& d) {
  return {{"id", d.id},           {"object", "file"},       {"bytes", d.size_bytes}, {"created_at", d.created_unix},
          {"filename", d.name},   {"purpose", "fine-tune"}, {"status", "processed"}, {"status_details", nullptr}};
}

json job_object(const JobRecord& j, const std::string& model_id) {
  const json& spec = j.spec;
  const json hp = spec.value("hyperparameters", json::object());
  json methods = spec.value("methods", json::array({"state_offset"}));
  const std::string method = methods.empty() ? "state_offset" : methods[0].get<std::string>();
  json hyper = {{"n_epochs", hp.contains("epochs") ? hp["epochs"] : json("auto")},
                {"batch_size", hp.contains("batch_size") ? hp["batch_size"] : json("auto")},
                {"learning_rate_multiplier", spec.value("learning_rate_multiplier", json("auto"))}};
  json error = nullptr;
  if (!j.error_code.empty()) {
    error = {{"code", j.error_code}, {"message", j.error_message},
             {"param", j.error_line > 0 ? json("line " + std::to_string(j.error_line)) : json()}};
  }
  return {{"id", j.id},
          {"object", "fine_tuning.job"},
          {"created_at", j.created_ms / 1000},
          {"finished_at", j.finished_ms > 0 ? json(j.finished_ms / 1000) : json()},
          {"model", model_id},
          {"fine_tuned_model", j.state == JobState::kSucceeded ? json(spec.value("adapter_name", "")) : json()},
          {"organization_id", j.tenant},
          {"status", openai_status(j.state)},
          {"hyperparameters", hyper},
          {"method", {{"type", method}, {method, {{"hyperparameters", hyper}}}}},
          {"training_file", spec.value("dataset_id", "")},
          {"validation_file", or_null(spec.value("validation_dataset_id", ""))},
          {"result_files", json::array()},
          {"trained_tokens", nullptr},
          {"error", error},
          {"seed", hp.value("seed", json(0))},
          {"estimated_finish", nullptr},
          {"integrations", json::array()},
          {"user_provided_suffix", or_null(spec.value("suffix", ""))},
          // statetune's own progress fields.
          {"statetune",
           {{"step", j.step}, {"total_steps", j.total_steps}, {"train_loss", j.train_loss}, {"val_loss", j.val_loss},
            {"adapter_version", or_null(j.adapter_version)}, {"resumes", j.resumes}}}};
}

json event_object(const EventRecord& e) {
  const json& p = e.payload;
  json out = {{"object", "fine_tuning.job.event"},
              {"id", "ftevent-" + e.job_id + "-" + std::to_string(e.seq)},
              {"created_at", e.time_ms / 1000},
              {"level", e.type == "error" ? "error" : "info"},
              {"type", e.type == "step" || e.type == "eval" ? "metrics" : "message"}};
  if (e.type == "step") {
    out["message"] = "Step " + std::to_string(p.value("step", int64_t{0})) + "/" +
                     std::to_string(p.value("total_steps", int64_t{0})) + ": training loss=" +
                     std::to_string(p.value("loss", 0.0));
    out["data"] = {{"step", p.value("step", int64_t{0})}, {"total_steps", p.value("total_steps", int64_t{0})},
                   {"train_loss", p.value("loss", 0.0)}, {"learning_rate", p.value("learning_rate", 0.0)}};
  } else if (e.type == "eval") {
    out["message"] = "Step " + std::to_string(p.value("step", int64_t{0})) +
                     ": validation loss=" + std::to_string(p.value("val_loss", 0.0));
    out["data"] = {{"step", p.value("step", int64_t{0})}, {"valid_loss", p.value("val_loss", 0.0)}};
  } else if (e.type == "checkpoint") {
    out["message"] = "Checkpoint saved at step " + std::to_string(p.value("step", int64_t{0}));
    out["data"] = {{"step", p.value("step", int64_t{0})}};
  } else if (e.type == "error") {
    out["message"] = p.value("message", "");
    out["data"] = {{"code", p.value("code", "")}, {"line", p.value("line", int64_t{0})}};
  } else {
    out["message"] = p.value("message", std::string(openai_status(e.state)));
    out["data"] = {{"status", openai_status(e.state)}};
  }
  return out;
}

std::string checkpoint_id(const EventRecord& e) { return "ftckpt-" + e.job_id + "-" + std::to_string(e.seq); }

// OpenAI's checkpoint object from a "checkpoint" event. statetune's checkpoints are resume points, not
// served models (the job's fine_tuned_model is its result), so fine_tuned_model_checkpoint is null.
json checkpoint_object(const EventRecord& e) {
  const json& p = e.payload;
  const int64_t step = p.value("step", int64_t{0});
  json metrics = {{"step", step}, {"train_loss", p.value("train_loss", 0.0)}};
  if (p.value("val_loss", 0.0) > 0) {
    metrics["valid_loss"] = p.value("val_loss", 0.0);
    metrics["valid_mean_token_accuracy"] = p.value("val_token_accuracy", 0.0);
  }
  return {{"object", "fine_tuning.job.checkpoint"},
          {"id", checkpoint_id(e)},
          {"created_at", e.time_ms / 1000},
          {"fine_tuned_model_checkpoint", nullptr},
          {"fine_tuning_job_id", e.job_id},
          {"step_number", step},
          {"metrics", metrics}};
}

// `limit` and `after` of a list request: 1..100, default 20.
int64_t list_limit(const httplib::Request& req) {
  if (!req.has_param("limit")) return kDefaultListLimit;
  const std::string v = req.get_param_value("limit");
  if (v.empty() || v.size() > 4 || v.find_first_not_of("0123456789") != std::string::npos ||
      std::stoll(v) < 1 || std::stoll(v) > kMaxListLimit) {
    throw invalid_request("`limit` must be an integer in [1, " + std::to_string(kMaxListLimit) + "]", "limit");
  }
  return std::stoll(v);
}

// One page of `items` (newest first) after the item whose id is `after`.
template <typename T, typename Id, typename Render>
json page(const std::vector<T>& items, const httplib::Request& req, Id id_of, Render render) {
  const int64_t limit = list_limit(req);
  size_t start = 0;
  if (req.has_param("after")) {
    const std::string after = req.get_param_value("after");
    auto it = std::find_if(items.begin(), items.end(), [&](const T& x) { return id_of(x) == after; });
    if (it == items.end()) throw invalid_request("`after` names no item of this list", "after");
    start = static_cast<size_t>(it - items.begin()) + 1;
  }
  json data = json::array();
  size_t i = start;
  for (; i < items.size() && static_cast<int64_t>(data.size()) < limit; ++i) data.push_back(render(items[i]));
  return {{"object", "list"}, {"data", data}, {"has_more", i < items.size()}};
}

// A file name made into a data set name ([A-Za-z0-9._-]{1,64}): the path dropped, other bytes '_'.
std::string dataset_name_of(const std::string& filename) {
  std::string name = filename.substr(filename.find_last_of("/\\") == std::string::npos ? 0 : filename.find_last_of("/\\") + 1);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  }
  if (name.size() > 64) name = name.substr(name.size() - 64);
  if (name.empty() || name == "." || name == "..") name = "file.jsonl";
  return name;
}

bool is_auto(const json& hp, const char* field) {
  auto it = hp.find(field);
  return it == hp.end() || it->is_null() || (it->is_string() && it->get<std::string>() == "auto");
}
// An OpenAI hyper-parameter: "auto" (nullopt) or a number / an integer.
std::optional<double> auto_or_number(const json& hp, const char* field) {
  return is_auto(hp, field) ? std::nullopt : http::opt_number(hp, field);
}
std::optional<int64_t> auto_or_integer(const json& hp, const char* field) {
  return is_auto(hp, field) ? std::nullopt : http::opt_integer(hp, field);
}

// POST /v1/fine_tuning/jobs body -> the job spec (CreateJobRequest's JSON form).
json job_spec(const json& body, const std::string& model_id) {
  http::reject_unknown_fields(body, {"model", "training_file", "validation_file", "suffix", "hyperparameters",
                                     "method", "seed", "integrations", "metadata"});
  const std::string model = http::required_string(body, "model");
  if (model != model_id) {
    throw http::not_found("the model '" + model.substr(0, 128) + "' does not exist; fine-tune '" + model_id + "'",
                          "model_not_found");
  }
  json spec = {{"dataset_id", http::required_string(body, "training_file")}};
  if (auto v = http::opt_string(body, "validation_file")) spec["validation_dataset_id"] = *v;
  std::string suffix = http::opt_string(body, "suffix").value_or("");
  if (suffix.empty()) suffix = random_id("ft-");
  engine::validate_name("suffix", suffix);
  spec["adapter_name"] = suffix;
  spec["suffix"] = suffix;
  // Hyper-parameters at the top (legacy) or under method.<type>.hyperparameters.
  json hp_in = json::object();
  if (const json* h = http::opt_object(body, "hyperparameters")) hp_in = *h;
  std::string method = "state_offset";
  if (const json* m = http::opt_object(body, "method")) {
    const std::string type = http::opt_string(*m, "type").value_or("supervised");
    if (type != "supervised") method = type;  // a statetune adapter kind; parse_job_params checks it
    if (const json* inner = http::opt_object(*m, type.c_str())) {
      if (const json* h = http::opt_object(*inner, "hyperparameters")) hp_in = *h;
    }
  }
  spec["methods"] = json::array({method});
  json hp = json::object();
  if (auto v = auto_or_integer(hp_in, "n_epochs")) hp["epochs"] = *v;
  if (auto v = auto_or_integer(hp_in, "batch_size")) hp["batch_size"] = *v;
  // statetune's extensions.
  if (auto v = http::opt_integer(hp_in, "max_steps")) hp["max_steps"] = *v;
  if (auto v = http::opt_integer(hp_in, "max_length")) hp["max_length"] = *v;
  if (auto v = auto_or_number(hp_in, "learning_rate_multiplier")) {
    if (*v <= 0 || *v > 100) throw invalid_request("learning_rate_multiplier must be in (0, 100]", "learning_rate_multiplier");
    spec["learning_rate_multiplier"] = *v;
    hp["learning_rate"] = *v * engine::trainer::default_learning_rate(method);
  }
  if (auto v = http::opt_integer(body, "seed")) {
    if (*v < 0) throw invalid_request("`seed` must be >= 0", "seed");
    hp["seed"] = *v;
  }
  spec["hyperparameters"] = hp;
  return spec;
}

}  // namespace

void add_training_routes(httplib::Server& server, const TrainingHttpContext& ctx) {
  const TrainingHttpContext* c = &ctx;
  auto route = [c](const char* name, auto body) {
    return [c, name, body](const httplib::Request& req, httplib::Response& res) {
      const int status = http::respond(
          name, res, [&] { body(req, res, http::authenticate(req, c->tenants).tenant); }, map_training_error);
      if (status >= 400) {
        std::string code = http::grpc_code_name(status);
        std::transform(code.begin(), code.end(), code.begin(), ::toupper);  // as the gRPC failures' label
        c->errors.Add({{"method", name}, {"code", code}}).Increment();
      }
    };
  };

  server.Post("/v1/files", route("POST /v1/files", [c](const httplib::Request& req, httplib::Response& res,
                                                         const std::string& tenant) {
    if (!req.is_multipart_form_data()) throw invalid_request("send multipart/form-data with `purpose` and `file`");
    if (!req.has_file("purpose") || req.get_file_value("purpose").content != "fine-tune") {
      throw invalid_request("`purpose` must be \"fine-tune\"", "purpose");
    }
    if (!req.has_file("file")) throw invalid_request("missing the `file` part", "file");
    const httplib::MultipartFormData file = req.get_file_value("file");
    const std::string name = dataset_name_of(file.filename);
    c->core.check_upload(tenant, name, file.content.size());
    ChatConversion converted = convert_chat_jsonl(file.content, c->chat_template);
    if (!converted.problems.ok()) throw invalid_request(converted.problems.summary(), "file");
    http::write_json(res, file_object(c->core.store_dataset(tenant, name, converted.jsonl, "")));
  }));
  server.Get("/v1/files", route("GET /v1/files", [c](const httplib::Request&, httplib::Response& res,
                                                     const std::string& tenant) {
    json data = json::array();
    for (const auto& d : c->store.datasets(tenant)) data.push_back(file_object(d));
    http::write_json(res, {{"object", "list"}, {"data", data}, {"has_more", false}});
  }));
  server.Get(R"(/v1/files/([^/]+))", route("GET /v1/files/{id}", [c](const httplib::Request& req,
                                                                      httplib::Response& res, const std::string& tenant) {
    http::write_json(res, file_object(c->core.dataset(tenant, req.matches[1])));
  }));
  server.Delete(R"(/v1/files/([^/]+))", route("DELETE /v1/files/{id}", [c](const httplib::Request& req,
                                                                            httplib::Response& res,
                                                                            const std::string& tenant) {
    const std::string id = req.matches[1];
    c->core.delete_dataset(tenant, id);
    http::write_json(res, {{"id", id}, {"object", "file"}, {"deleted", true}});
  }));

  server.Post("/v1/fine_tuning/jobs", route("POST /v1/fine_tuning/jobs", [c](const httplib::Request& req,
                                                                             httplib::Response& res,
                                                                             const std::string& tenant) {
    const json spec = job_spec(http::parse_json_body(req, kJobBodyLimits), c->model_id);
    http::write_json(res, job_object(c->core.create_job(tenant, spec), c->model_id));
  }));
  server.Get("/v1/fine_tuning/jobs", route("GET /v1/fine_tuning/jobs", [c](const httplib::Request& req,
                                                                           httplib::Response& res,
                                                                           const std::string& tenant) {
    http::write_json(res, page(c->store.jobs(tenant), req, [](const JobRecord& j) { return j.id; },
                               [c](const JobRecord& j) { return job_object(j, c->model_id); }));
  }));
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+))",
             route("GET /v1/fine_tuning/jobs/{id}", [c](const httplib::Request& req, httplib::Response& res,
                                                        const std::string& tenant) {
               http::write_json(res, job_object(c->core.job(tenant, req.matches[1]), c->model_id));
             }));
  server.Post(R"(/v1/fine_tuning/jobs/([^/]+)/cancel)",
              route("POST /v1/fine_tuning/jobs/{id}/cancel", [c](const httplib::Request& req, httplib::Response& res,
                                                                 const std::string& tenant) {
                http::write_json(res, job_object(c->core.cancel_job(tenant, req.matches[1]), c->model_id));
              }));
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+)/events)",
             route("GET /v1/fine_tuning/jobs/{id}/events", [c](const httplib::Request& req, httplib::Response& res,
                                                               const std::string& tenant) {
               const JobRecord j = c->core.job(tenant, req.matches[1]);
               std::vector<EventRecord> events = c->store.events(j.id, 0);
               std::reverse(events.begin(), events.end());  // newest first, as OpenAI lists them
               http::write_json(res, page(events, req,
                                          [](const EventRecord& e) {
                                            return "ftevent-" + e.job_id + "-" + std::to_string(e.seq);
                                          },
                                          event_object));
             }));
  server.Get(R"(/v1/fine_tuning/jobs/([^/]+)/checkpoints)",
             route("GET /v1/fine_tuning/jobs/{id}/checkpoints", [c](const httplib::Request& req,
                                                                    httplib::Response& res, const std::string& tenant) {
               const JobRecord j = c->core.job(tenant, req.matches[1]);
               std::vector<EventRecord> checkpoints;
               for (auto& e : c->store.events(j.id, 0)) {
                 if (e.type == "checkpoint") checkpoints.push_back(std::move(e));
               }
               std::reverse(checkpoints.begin(), checkpoints.end());  // newest first, as OpenAI lists them
               http::write_json(res, page(checkpoints, req, checkpoint_id, checkpoint_object));
             }));
}

}  // namespace statetune::training
