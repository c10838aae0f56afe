#include "server/training/job_runner.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <type_traits>

#include "server/common/logging.h"
#include "server/common/metrics.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/trainer/adapter_trainer.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/engine_error.h"
#include "server/training/dataset_validator.h"

namespace statetune::training {
namespace fs = std::filesystem;

void EventBus::notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++version_;
  }
  cv_.notify_all();
}

uint64_t EventBus::wait(uint64_t seen, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return version_ != seen; });
  return version_;
}

uint64_t EventBus::version() {
  std::lock_guard<std::mutex> lock(mu_);
  return version_;
}

TrainingMetrics::TrainingMetrics(prometheus::Registry& r)
    : jobs(prometheus::BuildGauge().Name("statetune_train_jobs").Help("Jobs by state").Register(r)),
      queue_wait(prometheus::BuildHistogram()
                     .Name("statetune_train_queue_wait_seconds")
                     .Help("Time from queued to started")
                     .Register(r)
                     .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.1, 1, 10, 60, 600,
                                                                      3600, 36000})),
      step_time(prometheus::BuildHistogram()
                    .Name("statetune_train_step_seconds")
                    .Help("Wall time of one optimizer step (between progress reports)")
                    .Register(r)
                    .Add({}, common::latency_buckets_seconds())),
      tokens_per_second(prometheus::BuildGauge()
                            .Name("statetune_train_tokens_per_second")
                            .Help("Training tokens per second of the running job")
                            .Register(r)
                            .Add({})),
      validation_loss(prometheus::BuildGauge()
                          .Name("statetune_train_validation_loss")
                          .Help("Latest validation loss of running jobs")
                          .Register(r)),
      steps(prometheus::BuildCounter()
                .Name("statetune_train_steps_total")
                .Help("Optimizer steps")
                .Register(r)
                .Add({})),
      datasets(prometheus::BuildCounter()
                   .Name("statetune_train_dataset_uploads_total")
                   .Help("Data set uploads by result")
                   .Register(r)),
      rpc_errors(prometheus::BuildCounter()
                     .Name("statetune_train_rpc_errors_total")
                     .Help("Failed Training RPCs by method and gRPC status code")
                     .Register(r)),
      lease_renewals(prometheus::BuildCounter()
                         .Name("statetune_train_lease_renewals_total")
                         .Help("Job lease renewals this worker made (shared mode)")
                         .Register(r)
                         .Add({})),
      leases_lost(prometheus::BuildCounter()
                      .Name("statetune_train_leases_lost_total")
                      .Help("Jobs this worker stopped because its lease expired or was taken (shared mode)")
                      .Register(r)
                      .Add({})),
      jobs_resumed(prometheus::BuildCounter()
                       .Name("statetune_train_jobs_resumed_total")
                       .Help("Jobs this worker claimed after another worker's lease on them expired (shared mode)")
                       .Register(r)
                       .Add({})) {}

namespace {

std::string slurp(const fs::path& p) {
  try {
    return engine::read_file(p);
  } catch (const std::runtime_error&) {
    // The job's error reaches the tenant: name the file, not the server's folders.
    throw std::runtime_error("cannot read the stored data set " + p.filename().string());
  }
}

std::vector<engine::trainer::TextExample> load_examples(const fs::path& path) {
  const std::string text = slurp(path);
  ValidationOptions vo;
  vo.min_examples = 0;
  const auto report = validate_jsonl(text, vo);
  if (!report.ok()) {
    throw std::runtime_error("the stored data set is no longer valid: " + report.summary(5));
  }
  std::vector<engine::trainer::TextExample> out;
  out.reserve(report.examples.size());
  for (const auto& e : report.examples) out.push_back({e.prompt, e.completion});
  return out;
}

}  // namespace

struct ExampleSplit {
  std::vector<engine::trainer::TextExample> train, validation;
};

namespace {

// A job's training and validation examples: the validation data set, or the split's share of the
// training one. Throws std::runtime_error when a data set is gone or the split leaves nothing.
ExampleSplit load_job_examples(JobStore& store, const JobRecord& job, const JobParams& p) {
  ExampleSplit out;
  auto ds = store.dataset(job.tenant, p.dataset_id);
  if (!ds) throw std::runtime_error("data set " + p.dataset_id + " no longer exists");
  out.train = load_examples(store.dataset_file(*ds));
  if (!p.validation_dataset_id.empty()) {
    auto vds = store.dataset(job.tenant, p.validation_dataset_id);
    if (!vds) throw std::runtime_error("validation data set " + p.validation_dataset_id + " no longer exists");
    out.validation = load_examples(store.dataset_file(*vds));
  } else if (p.validation_split > 0) {
    const size_t held = std::max<size_t>(1, static_cast<size_t>(p.validation_split * out.train.size()));
    if (held >= out.train.size()) throw std::runtime_error("validation_split leaves no training examples");
    out.validation.assign(out.train.end() - static_cast<std::ptrdiff_t>(held), out.train.end());
    out.train.resize(out.train.size() - held);
  }
  return out;
}

// The trainer's settings for job `job_id` with parameters `p` (the runner's defaults where the job
// names none); checkpoints under data-dir/checkpoints/<job id>.
engine::trainer::TrainerOptions trainer_options(const JobParams& p, const RunnerOptions& options,
                                                const std::string& job_id) {
  engine::trainer::TrainerOptions o;
  o.methods = p.methods;
  if (p.learning_rate > 0) o.lr_state_offset = o.lr_output_offset = o.lr_initial_state = p.learning_rate;
  o.epochs = p.epochs;
  o.batch_size = p.batch_size;
  o.max_steps = p.max_steps;
  o.max_length = p.max_length;
  o.warmup_steps = p.warmup_steps;
  o.eval_every = p.eval_every;
  o.seed = p.seed;
  o.early_stopping_patience = p.early_stopping_patience;
  o.checkpoint_dir = (options.data_dir / "checkpoints" / job_id).string();
  o.checkpoint_every = p.checkpoint_every > 0 ? p.checkpoint_every : options.checkpoint_every;
  o.log_every = std::max<int64_t>(1, options.log_every);
  o.adapter_name = p.adapter_name;
  return o;
}

}  // namespace

JobRunner::JobRunner(JobStore& store, JobLeases* leases, EventBus& bus, const engine::MambaModel& model,
                     const engine::Tokenizer& tokenizer, PublishFn publish, RunnerOptions options,
                     TrainingMetrics* metrics)
    : store_(store),
      leases_(leases),
      bus_(bus),
      model_(model),
      tokenizer_(tokenizer),
      publish_(std::move(publish)),
      options_(std::move(options)),
      metrics_(metrics) {}

JobRunner::~JobRunner() { stop(); }

void JobRunner::refresh_state_gauge() {
  if (!metrics_) return;
  std::map<JobState, int64_t> counts;
  for (auto [s, n] : store_.count_by_state()) counts[s] = n;
  for (JobState s : {JobState::kValidating, JobState::kQueued, JobState::kRunning,
                     JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    metrics_->jobs.Add({{"state", state_name(s)}}).Set(static_cast<double>(counts[s]));
  }
}

void JobRunner::set_state(JobRecord& job, JobState state, const std::string& message) {
  job.state = state;
  if (is_terminal(state)) job.finished_ms = now_ms();
  store_.update_job(job, "state", {{"message", message}});
  common::log_event(spdlog::level::info, "job.state",
                    {{"job", job.id},
                     {"tenant", job.tenant},
                     {"state", state_name(state)},
                     {"message", message}});
  refresh_state_gauge();
  bus_.notify();
}

std::string JobRunner::without_server_paths(std::string message) const {
  std::error_code ec;
  for (const fs::path& dir : {fs::absolute(options_.data_dir, ec), options_.data_dir}) {
    std::string prefix = dir.lexically_normal().string();
    if (prefix.empty() || prefix == ".") continue;
    if (prefix.back() != '/') prefix += '/';
    for (size_t at; (at = message.find(prefix)) != std::string::npos;) {
      message.erase(at, prefix.size());
    }
  }
  return message;
}

void JobRunner::fail(JobRecord& job, const std::string& code, const std::string& log_message,
                     int64_t line) {
  // The tenant reads job errors: the service's folders become relative names in them.
  const std::string message = without_server_paths(log_message);
  job.error_code = code;
  job.error_message = message;
  job.error_line = line;
  job.state = JobState::kFailed;
  job.finished_ms = now_ms();
  store_.update_job(job, "error", {{"code", code}, {"message", message}, {"line", line}});
  common::log_event(
      spdlog::level::warn, "job.failed",
      {{"job", job.id}, {"tenant", job.tenant}, {"code", code}, {"message", log_message}});
  refresh_state_gauge();
  bus_.notify();
}

void JobRunner::start() {
  // Shared mode: a job left running by a worker that died is resumed once its lease expires.
  if (leases_) {
    refresh_state_gauge();
    worker_ = std::thread([this] { loop(); });
    return;
  }
  for (JobRecord job : store_.jobs_in_state(JobState::kRunning)) {
    ++job.resumes;
    set_state(job, JobState::kQueued,
              "the service stopped while the job was running at step " + std::to_string(job.step) +
                  "; it resumes from its last checkpoint");
  }
  // A job stuck validating never passed validation: nothing to resume.
  for (JobRecord job : store_.jobs_in_state(JobState::kValidating)) {
    fail(job, "ABORTED", "the service stopped while the job was being validated");
  }
  refresh_state_gauge();
  worker_ = std::thread([this] { loop(); });
}

void JobRunner::notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

bool JobRunner::cancel(const std::string& id) {
  if (leases_) {
    // Any replica's worker may run it: the store cancels a queued job and flags a running one.
    if (!leases_->request_cancel(id)) return false;
    common::log_event(spdlog::level::info, "job.cancel_requested", {{"job", id}});
    std::lock_guard<std::mutex> lock(mu_);
    if (running_id_ == id) {  // this worker runs it: no need to wait for the next renewal
      user_cancelled_ = true;
      cancel_ = true;
      cv_.notify_all();
    }
    refresh_state_gauge();
    bus_.notify();
    return true;
  }
  // Under mu_, so the worker cannot pick a queued job between the check and the update.
  std::lock_guard<std::mutex> lock(mu_);
  auto job = store_.job(id);
  if (!job || is_terminal(job->state)) return false;  // also the running one once it has finished
  if (running_id_ == id) {
    user_cancelled_ = true;
    cancel_ = true;
    cv_.notify_all();  // a job waiting to retry publishing wakes up
    return true;
  }
  set_state(*job, JobState::kCancelled, "cancelled before it started");
  return true;
}

void JobRunner::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cancel_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::optional<JobRecord> JobRunner::next_job(std::unique_lock<std::mutex>& lock) {
  std::optional<JobRecord> next;
  bool cancel_requested = false;
  if (leases_) {
    std::optional<ClaimedJob> claimed;
    lock.unlock();
    try {
      claimed = leases_->claim(options_.worker_id, options_.lease);
    } catch (const std::exception& e) {
      common::log_event(spdlog::level::warn, "job.claim_failed", {{"error", e.what()}});
    }
    lock.lock();
    if (claimed) {
      if (claimed->resumed) {
        if (metrics_) metrics_->jobs_resumed.Increment();
        common::log_event(spdlog::level::info, "job.lease_taken_over",
                          {{"job", claimed->job.id}, {"epoch", claimed->job.lease_epoch}});
      }
      cancel_requested = claimed->cancel_requested;
      next = std::move(claimed->job);
    }
  } else {
    auto queued = store_.jobs_in_state(JobState::kQueued);
    if (!queued.empty()) next = std::move(queued.front());
  }
  if (!next) {
    // Shared mode: other replicas queue jobs and leases expire, which only a look at the table shows.
    const auto poll = leases_ ? std::min<std::chrono::milliseconds>(options_.lease / 4, std::chrono::seconds(1))
                              : std::chrono::milliseconds(5000);
    cv_.wait_for(lock, poll, [&] { return stopping_ || wake_; });
    wake_ = false;
    return std::nullopt;
  }
  running_id_ = next->id;
  user_cancelled_ = cancel_requested;
  cancel_ = cancel_requested || stopping_;
  lease_lost_ = false;
  return next;
}

void JobRunner::loop() {
  while (true) {
    std::optional<JobRecord> next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stopping_) return;
      next = next_job(lock);
      if (!next) continue;
    }
    std::thread heartbeat;
    if (leases_) {
      std::lock_guard<std::mutex> lock(heartbeat_mu_);
      heartbeat_stop_ = false;
      heartbeat = std::thread([this, job = *next] { keep_lease(job); });
    }
    try {
      run(*next);
    } catch (const LeaseLost& e) {
      // Another worker holds the job now: nothing more is written for it here.
      lose_lease(*next, e.what());
    } catch (const std::exception& e) {
      // Errors while recording a failure (e.g. a full disk, the database down): log; the job is
      // retried after a restart (embedded) or once its lease expires (shared).
      common::log_event(spdlog::level::err, "job.runner_error",
                        {{"job", next->id}, {"error", e.what()}});
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
    }
    if (heartbeat.joinable()) {
      {
        std::lock_guard<std::mutex> lock(heartbeat_mu_);
        heartbeat_stop_ = true;
      }
      heartbeat_cv_.notify_all();
      heartbeat.join();
    }
    std::lock_guard<std::mutex> lock(mu_);
    running_id_.clear();
  }
}

void JobRunner::keep_lease(const JobRecord& job) {
  const auto interval = std::max<std::chrono::milliseconds>(options_.lease / 3, std::chrono::milliseconds(20));
  // As far as this worker knows: renewals that fail (database unreachable) do not extend it.
  auto held_until = std::chrono::steady_clock::now() + options_.lease;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(heartbeat_mu_);
      if (heartbeat_cv_.wait_for(lock, interval, [&] { return heartbeat_stop_; })) return;
    }
    const auto sent = std::chrono::steady_clock::now();
    try {
      const LeaseRenewal r = leases_->renew(job, options_.lease);
      if (!r.held) {
        lose_lease(job, "the lease expired and another worker claimed the job");
        return;
      }
      if (metrics_) metrics_->lease_renewals.Increment();
      held_until = sent + options_.lease;
      if (r.cancel_requested && !user_cancelled_) {
        std::lock_guard<std::mutex> lock(mu_);
        user_cancelled_ = true;
        cancel_ = true;
        cv_.notify_all();
      }
    } catch (const std::exception& e) {
      common::log_event(spdlog::level::warn, "job.lease_renewal_failed", {{"job", job.id}, {"error", e.what()}});
      if (std::chrono::steady_clock::now() >= held_until) {
        lose_lease(job, "the lease could not be renewed before it expired");
        return;
      }
    }
  }
}

void JobRunner::lose_lease(const JobRecord& job, const std::string& why) {
  if (lease_lost_.exchange(true)) return;  // once per job
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_ = true;  // the trainer stops at its next step
    cv_.notify_all();
  }
  if (metrics_) metrics_->leases_lost.Increment();
  common::log_event(spdlog::level::warn, "job.lease_lost",
                    {{"job", job.id}, {"epoch", job.lease_epoch}, {"reason", why}});
}

// One job from claim to end: parse, load the examples, train (checkpoints and progress as events),
// then store and publish the adapter. Each step that ends the job records why and returns.
void JobRunner::run(JobRecord job) {
  JobParams p;
  try {
    p = parse_job_params(job.spec);
  } catch (const std::exception& e) {
    fail(job, "INVALID_ARGUMENT", e.what());
    return;
  }
  const bool resuming = job.started_ms != 0;
  if (metrics_ && !resuming) {
    metrics_->queue_wait.Observe(static_cast<double>(now_ms() - job.created_ms) / 1000.0);
  }
  if (!resuming) job.started_ms = now_ms();
  set_state(job, JobState::kRunning,
            resuming
                ? "resuming from the last checkpoint (resume " + std::to_string(job.resumes) + ")"
                : "started");

  ExampleSplit examples;
  try {
    examples = load_job_examples(store_, job, p);
  } catch (const std::exception& e) {
    fail(job, "FAILED_PRECONDITION", e.what());
    return;
  }
  const engine::trainer::TrainerOptions o = trainer_options(p, options_, job.id);
  fs::create_directories(o.checkpoint_dir);
  if (leases_) {
    // Whichever worker ran the job before: its last checkpoint is in the database.
    try {
      leases_->restore_checkpoint(job, o.checkpoint_dir);
    } catch (const std::exception& e) {
      fail(job, "INTERNAL", std::string("cannot read the job's last checkpoint: ") + e.what());
      return;
    }
  }

  ProgressMarks marks;
  auto progress = [&](const engine::trainer::TrainProgress& pr) { record_progress(job, pr, o.checkpoint_dir, marks); };
  // The running job's gauges describe it only while it runs.
  auto clear_gauges = [&] {
    if (!metrics_) return;
    metrics_->validation_loss.Remove(&metrics_->validation_loss.Add({{"job", job.id}}));
    metrics_->tokens_per_second.Set(0);
  };
  engine::trainer::TrainResult result;
  try {
    engine::trainer::AdapterTrainer trainer(model_, tokenizer_, o);
    result = trainer.train(examples.train, examples.validation, progress, &cancel_, /*resume=*/true);
  } catch (const LeaseLost&) {
    clear_gauges();
    throw;
  } catch (const std::invalid_argument& e) {
    clear_gauges();
    fail(job, "INVALID_ARGUMENT", e.what());
    return;
  } catch (const std::exception& e) {
    clear_gauges();
    fail(job, "INTERNAL", std::string("training failed: ") + e.what());
    return;
  }
  clear_gauges();
  if (result.cancelled) {
    end_stopped_job(job, o.checkpoint_dir);
    return;
  }
  publish_trained(job, p, result, examples, o.checkpoint_dir);
}

void JobRunner::record_progress(JobRecord& job, const engine::trainer::TrainProgress& pr,
                                const std::string& checkpoint_dir, ProgressMarks& marks) {
  using Kind = engine::trainer::TrainProgress::Kind;
  if (pr.kind == Kind::kStep) {
    const auto now = std::chrono::steady_clock::now();
    if (metrics_) {
      if (marks.last_step >= 0 && pr.step > marks.last_step) {
        metrics_->step_time.Observe(std::chrono::duration<double>(now - marks.last_step_time).count() /
                                    static_cast<double>(pr.step - marks.last_step));
      }
      metrics_->tokens_per_second.Set(pr.tokens_per_s);
      metrics_->steps.Increment();
    }
    marks.last_step_time = now;
    marks.last_step = pr.step;
    job.step = pr.step;
    job.total_steps = pr.total_steps;
    job.train_loss = pr.loss;
    store_.append_progress(job, "step",
                           {{"step", pr.step},
                            {"total_steps", pr.total_steps},
                            {"epoch", pr.epoch},
                            {"loss", pr.loss},
                            {"learning_rate", pr.lr},
                            {"tokens_per_second", pr.tokens_per_s},
                            {"eta_seconds", pr.eta_s},
                            {"elapsed_seconds", pr.elapsed_s}});
    bus_.notify();
  } else if (pr.kind == Kind::kValidation) {
    job.val_loss = pr.val_loss;
    marks.last_val_accuracy = pr.val_token_accuracy;
    if (metrics_) metrics_->validation_loss.Add({{"job", job.id}}).Set(pr.val_loss);
    store_.append_progress(job, "eval",
                           {{"step", pr.step},
                            {"val_loss", pr.val_loss},
                            {"val_token_accuracy", pr.val_token_accuracy},
                            {"improved", pr.improved}});
    bus_.notify();
  } else if (pr.kind == Kind::kCheckpoint) {
    // Shared mode: stored in the database first, so that the event names a checkpoint any worker
    // can resume from.
    if (leases_) leases_->save_checkpoint(job, checkpoint_dir);
    // An event like the others, so every job store has the checkpoints (GET .../checkpoints).
    store_.append_progress(job, "checkpoint",
                           {{"step", pr.step},
                            {"train_loss", pr.loss},
                            {"val_loss", job.val_loss},
                            {"val_token_accuracy", marks.last_val_accuracy}});
    bus_.notify();
  }
}

// The trainer stopped early: the tenant cancelled, this worker lost its lease or is stopping.
void JobRunner::end_stopped_job(JobRecord& job, const std::string& checkpoint_dir) {
  if (lease_lost_) return;  // another worker runs the job now
  if (user_cancelled_) {
    set_state(job, JobState::kCancelled, "cancelled at step " + std::to_string(job.step));
    fs::remove_all(checkpoint_dir);
  } else if (leases_) {
    // This worker is stopping: the checkpoint it just wrote goes to the database and the job back
    // to the queue, so another worker resumes it now rather than when the lease expires.
    leases_->save_checkpoint(job, checkpoint_dir);
    ++job.resumes;
    set_state(job, JobState::kQueued,
              "the worker stopped at step " + std::to_string(job.step) +
                  "; the job resumes from its last checkpoint");
    fs::remove_all(checkpoint_dir);
  }
  // Otherwise the service is stopping: the job stays running and resumes after the restart.
}

// Stores the trained adapter, then publishes it: the job ends succeeded, or failed when publishing
// cannot succeed, or stays running when the service stops meanwhile (it publishes after the restart).
void JobRunner::publish_trained(JobRecord& job, const JobParams& p, engine::trainer::TrainResult& result,
                                const ExampleSplit& examples, const std::string& checkpoint_dir) {
  // Evaluation results go with the adapter (serving exposes the `eval` object as eval_metrics).
  nlohmann::json eval = {{"final_train_loss", result.final_train_loss}, {"steps", result.steps}};
  if (!result.validations.empty()) {
    eval["val_loss"] = result.best_val_loss;
    eval["val_token_accuracy"] = result.validations.back().token_accuracy;
  }
  engine::Adapter adapter = std::move(result.adapter);
  adapter.name = p.adapter_name;
  adapter.extra_metadata["eval"] = eval;
  // "training" holds the trainer's own record (rates, steps, ...); the job's context sits beside
  // it.
  adapter.extra_metadata["job"] = {{"job_id", job.id},
                                   {"dataset_id", p.dataset_id},
                                   {"request", job.spec},
                                   {"examples", examples.train.size()},
                                   {"validation_examples", examples.validation.size()},
                                   {"early_stopped", result.early_stopped},
                                   {"best_step", result.best_step}};
  const fs::path out = options_.data_dir / "outputs" / job.tenant / (job.id + ".safetensors");
  try {
    fs::create_directories(out.parent_path());
    engine::save_adapter(adapter, out);
  } catch (const std::exception& e) {
    common::log_event(spdlog::level::err, "job.save_failed",
                      {{"job", job.id}, {"error", e.what()}});
    fail(job, "INTERNAL", "training finished but the service could not store the trained adapter");
    return;
  }
  job.eval = eval;
  std::string error;
  bool interrupted = false;
  std::function<std::string()> attempt = [&] { return publish_(job.tenant, p.adapter_name, out); };
  std::string adapter_bytes;
  if (leases_) {
    adapter_bytes = engine::read_file(out);
    leases_->save_output(job, adapter_bytes);
    // Version, current pointer, NOTIFY and the job's success in one transaction (it sets job).
    attempt = [&] {
      try {
        return leases_->publish(job, p.adapter_name, adapter_bytes);
      } catch (const LeaseLost&) {
        throw;
      } catch (const std::exception& e) {
        const engine::ErrorKind kind = engine::error_kind_of(e);
        std::string code = engine::error_kind_name(kind);
        for (char& c : code) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        throw PublishError(e.what(), code, kind == engine::ErrorKind::kUnavailable);
      }
    };
  }
  const std::string version = publish_with_retry(job, attempt, error, interrupted);
  if (interrupted) {
    if (user_cancelled_) {
      set_state(job, JobState::kCancelled, "cancelled while publishing");
      fs::remove_all(checkpoint_dir);
    }
    return;  // the service is stopping: the job stays running and publishes after the restart
  }
  if (version.empty()) {
    fail(job, "UNAVAILABLE", error);
    return;
  }
  const std::string message = "published as " + p.adapter_name + " version " + version;
  if (leases_) {
    common::log_event(spdlog::level::info, "job.state",
                      {{"job", job.id}, {"tenant", job.tenant}, {"state", state_name(job.state)}, {"message", message}});
    refresh_state_gauge();
    bus_.notify();
  } else {
    job.adapter_name = p.adapter_name;
    job.adapter_version = version;
    set_state(job, JobState::kSucceeded, message);
  }
  fs::remove_all(checkpoint_dir);
}
std::string JobRunner::publish_with_retry(JobRecord& job, const std::function<std::string()>& attempt_publish,
                                          std::string& error, bool& interrupted) {
  const auto deadline = std::chrono::steady_clock::now() + options_.publish_retry_for;
  auto backoff = std::chrono::milliseconds(500);
  for (int attempt = 1;; ++attempt) {
    std::string code = "INTERNAL";
    bool retryable = true;
    try {
      return attempt_publish();
    } catch (const LeaseLost&) {
      throw;
    } catch (const std::exception& e) {
      if (const auto* pe = dynamic_cast<const PublishError*>(&e)) {
        code = pe->code;
        retryable = pe->retryable;
      }
      common::log_event(
          spdlog::level::warn, "job.publish_failed",
          {{"job", job.id}, {"attempt", attempt}, {"code", code}, {"error", e.what()}});
    }
    const auto now = std::chrono::steady_clock::now();
    if (!retryable || now + backoff > deadline) {
      const auto tried_s =
          std::chrono::duration_cast<std::chrono::seconds>(options_.publish_retry_for).count();
      error = "training finished but publishing the adapter to the serving service failed (" +
              code + ")" +
              (retryable ? " for " + std::to_string(tried_s) + " s, " + std::to_string(attempt) +
                               " attempts"
                         : std::string()) +
              "; the trained adapter is kept: ask the operator to publish job " + job.id;
      return "";
    }
    // Visible to the tenant as an event; the job stays running meanwhile.
    set_state(job, JobState::kRunning,
              "training finished; publishing to the serving service failed (" + code +
                  "), trying again in " + std::to_string(backoff.count()) + " ms");
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, backoff, [&] { return stopping_ || user_cancelled_; })) {
        interrupted = true;
        return "";
      }
    }
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
  }
}

}  // namespace statetune::training
