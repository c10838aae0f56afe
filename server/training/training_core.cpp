#include "server/training/training_core.h"

#include <filesystem>
#include <random>

#include "server/engine/adapters/adapter_id.h"
#include "server/common/logging.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/util/sha256.h"
#include "server/training/dataset_validator.h"
#include "server/engine/util/durable_file.h"
#include "server/training/job_params.h"

namespace statetune::training {
namespace fs = std::filesystem;

std::string random_id(const std::string& prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return prefix + buf;
}

TrainingCore::TrainingCore(const TrainServiceOptions& options, JobStore& store, JobRunner& runner, EventBus& bus,
                           TrainingMetrics& metrics, const engine::Tokenizer& tokenizer)
    : o_(options), store_(store), runner_(runner), bus_(bus), metrics_(metrics), tokenizer_(tokenizer) {
  for (int32_t id = 0; id < static_cast<int32_t>(tokenizer_.vocab_size()); ++id) {
    max_token_bytes_ = std::max(max_token_bytes_, tokenizer_.token_bytes(id).size());
  }
}

void TrainingCore::count_upload(const char* result) { metrics_.datasets.Add({{"result", result}}).Increment(); }

// Tokens of `text`, counted a chunk at a time and no further once above `limit` (tokenizing a 20 MB
// line whole takes seconds). A chunk ends before a single space between two non-space characters: the
// byte-level pre-tokenizer always starts a new piece there (" word"), so the chunks' counts add up to
// the whole text's.
int64_t TrainingCore::count_tokens(std::string_view text, int64_t limit) const {
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
    total += static_cast<int64_t>(tokenizer_.encode(text.substr(pos, end - pos), /*parse_special_tokens=*/false).size());
    pos = end;
  }
  return total;
}

void TrainingCore::check_upload(const std::string& tenant, const std::string& name, uint64_t total_bytes) {
  try {
    engine::validate_name("data set name", name);
  } catch (const std::invalid_argument&) {
    count_upload("invalid");
    throw;
  }
  // Compared unsigned: total_bytes is a uint64 and 2^64-1 must not wrap to -1 and pass.
  if (total_bytes > static_cast<uint64_t>(o_.max_dataset_bytes)) {
    count_upload("too_large");
    throw TrainingError(TrainingError::Kind::kResourceExhausted,
                        "the file is " + std::to_string(total_bytes) + " bytes, above --max-dataset-bytes " +
                            std::to_string(o_.max_dataset_bytes));
  }
  if (store_.tenant_dataset_bytes(tenant) + static_cast<int64_t>(total_bytes) > o_.tenant_storage_bytes) {
    count_upload("quota");
    throw TrainingError(TrainingError::Kind::kResourceExhausted,
                        "the tenant's data sets would exceed --tenant-storage-bytes " +
                            std::to_string(o_.tenant_storage_bytes));
  }
}

DatasetRecord TrainingCore::store_dataset(const std::string& tenant, const std::string& name,
                                          const std::string& bytes, const std::string& sha256) {
  check_upload(tenant, name, bytes.size());
  const std::string sha = sha256.empty() ? engine::Sha256::hex(bytes) : sha256;
  ValidationOptions vo;
  vo.min_examples = o_.min_examples;
  vo.max_example_tokens = o_.max_example_tokens;
  vo.max_token_bytes = max_token_bytes_;
  vo.count_tokens = [this](std::string_view t, int64_t limit) { return count_tokens(t, limit); };
  const ValidationReport report = validate_jsonl(bytes, vo);
  if (!report.ok()) {
    count_upload("invalid");
    common::log_event(spdlog::level::info, "dataset.rejected", {{"tenant", tenant}, {"problems", report.total_problems}});
    throw std::invalid_argument(report.summary());
  }
  DatasetRecord d;
  d.id = random_id("ds-");
  d.tenant = tenant;
  d.name = name;
  d.path = (o_.data_dir / "datasets" / tenant / (d.id + ".jsonl")).string();
  d.sha256 = sha;
  d.size_bytes = static_cast<int64_t>(bytes.size());
  d.examples = static_cast<int64_t>(report.examples.size());
  d.max_example_tokens = report.max_example_tokens;
  d.created_unix = now_ms() / 1000;
  try {
    std::lock_guard<std::mutex> lock(upload_mu_);
    if (store_.tenant_dataset_bytes(tenant) + d.size_bytes > o_.tenant_storage_bytes) {
      count_upload("quota");
      throw TrainingError(TrainingError::Kind::kResourceExhausted,
                          "the tenant's data sets would exceed --tenant-storage-bytes");
    }
    engine::create_folders(fs::path(d.path).parent_path());
    engine::write_file_durably(d.path, bytes);  // removes its temporary file when it fails
    try {
      store_.insert_dataset(d, bytes);
    } catch (...) {
      // No record, no file: the failed upload leaves the disk as it was.
      std::error_code ec;
      fs::remove(d.path, ec);
      throw;
    }
  } catch (const TrainingError&) {
    throw;  // counted where it was thrown
  } catch (const engine::EngineError& e) {
    // The shared mode checks the tenant's storage again inside the inserting transaction (another
    // replica may have stored a data set since the check above).
    count_upload(e.kind() == engine::ErrorKind::kResourceExhausted ? "quota" : "error");
    throw;
  } catch (...) {
    count_upload("error");
    throw;  // the front end logs it and answers "storage full" or an internal error
  }
  count_upload("ok");
  common::log_event(spdlog::level::info, "dataset.uploaded",
                    {{"tenant", tenant}, {"dataset", d.id}, {"examples", d.examples}, {"bytes", d.size_bytes}});
  return d;
}

DatasetRecord TrainingCore::dataset(const std::string& tenant, const std::string& id) {
  auto d = store_.dataset(tenant, id);
  if (!d) throw TrainingError(TrainingError::Kind::kNotFound, "no data set " + id);
  return *d;
}

void TrainingCore::delete_dataset(const std::string& tenant, const std::string& id) {
  const DatasetRecord d = dataset(tenant, id);
  if (store_.dataset_in_use(tenant, id)) {
    throw TrainingError(TrainingError::Kind::kFailedPrecondition, "a queued or running job uses data set " + id);
  }
  store_.delete_dataset(tenant, id);
  std::error_code ec;
  fs::remove(d.path, ec);
}

JobRecord TrainingCore::create_job(const std::string& tenant, const nlohmann::json& spec) {
  if (stopping_) throw TrainingError(TrainingError::Kind::kUnavailable, "the service is stopping");
  engine::validate_name("adapter_name", spec.value("adapter_name", ""));
  const JobParams p = parse_job_params(spec);
  auto ds = store_.dataset(tenant, p.dataset_id);
  if (!ds) throw TrainingError(TrainingError::Kind::kNotFound, "no data set " + p.dataset_id);
  int64_t train_examples = ds->examples;
  if (!p.validation_dataset_id.empty()) {
    if (!store_.dataset(tenant, p.validation_dataset_id)) {
      throw TrainingError(TrainingError::Kind::kNotFound, "no validation data set " + p.validation_dataset_id);
    }
  } else if (p.validation_split > 0) {
    train_examples -= std::max<int64_t>(1, static_cast<int64_t>(p.validation_split * ds->examples));
  }
  if (train_examples < o_.min_examples) {
    throw std::invalid_argument("after the validation split " + std::to_string(train_examples) +
                                " training examples remain, fewer than the minimum of " +
                                std::to_string(o_.min_examples));
  }
  JobRecord job;
  {
    // Limit check and insert under the same lock so two concurrent creates cannot both pass.
    std::lock_guard<std::mutex> lock(create_mu_);
    if (store_.count_jobs(tenant, {JobState::kValidating, JobState::kQueued, JobState::kRunning}) >=
        o_.max_active_jobs) {
      throw TrainingError(TrainingError::Kind::kResourceExhausted,
                          "the tenant already has " + std::to_string(o_.max_active_jobs) +
                              " queued or running jobs (--max-active-jobs)");
    }
    job.id = random_id("job-");
    job.tenant = tenant;
    job.state = JobState::kQueued;
    job.spec = spec;
    job.created_ms = now_ms();
    store_.insert_job(job, "queued");
  }
  common::log_event(spdlog::level::info, "job.created", {{"job", job.id}, {"tenant", tenant}, {"dataset", ds->id}});
  runner_.refresh_state_gauge();
  runner_.notify();
  bus_.notify();
  return job;
}

JobRecord TrainingCore::job(const std::string& tenant, const std::string& id) {
  auto j = store_.job(id);
  if (!j || j->tenant != tenant) throw TrainingError(TrainingError::Kind::kNotFound, "no job " + id);
  return std::move(*j);
}

JobRecord TrainingCore::cancel_job(const std::string& tenant, const std::string& id) {
  const JobRecord j = job(tenant, id);
  if (!runner_.cancel(j.id)) {
    throw TrainingError(TrainingError::Kind::kFailedPrecondition, "job " + j.id + " already " + state_name(j.state));
  }
  return job(tenant, id);
}

}  // namespace statetune::training
