#include "server/engine/runtime/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "server/engine/adapters/adapter_store.h"

namespace statetune::engine {
namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

// Lets a handle wake the engine without dangling once the scheduler is gone.
struct RequestHandle::Waker {
  std::mutex mu;
  std::function<void()> fn;
};

void RequestHandle::cancel() {
  if (cancelled_.exchange(true)) return;
  if (!waker_) return;
  std::lock_guard<std::mutex> lock(waker_->mu);
  if (waker_->fn) waker_->fn();
}

struct Scheduler::Entry {
  GenerationRequest request;
  std::shared_ptr<RequestHandle> handle;
  Clock::time_point submitted;
};

struct Scheduler::Running {
  std::unique_ptr<Entry> entry;
  int64_t row = 0;
  SlotLease lease;
  Sampler sampler;
  int64_t last_token = 0;
  int64_t generated = 0;
  Clock::time_point admitted, first_token;
  bool has_first_token = false;

  explicit Running(const SamplingParams& params) : sampler(params) {}
};

Scheduler::Scheduler(MambaModel& model, AdapterPool& pool, const SchedulerOptions& options,
                     std::function<void(const StepInfo&)> on_step)
    : model_(model),
      pool_(pool),
      options_(options),
      on_step_(std::move(on_step)),
      cache_(model.config(), std::max<int64_t>(options.max_batch, 1), model.device(),
             options.decode_path == DecodePath::kDirect
                 ? 0
                 : BucketedDecoder::scratch_rows_needed(std::max<int64_t>(options.max_batch, 1))) {
  if (options_.max_batch < 1) throw std::invalid_argument("max_batch must be >= 1");
  if (options_.decode_path != DecodePath::kDirect) {
    bucketed_ = std::make_unique<BucketedDecoder>(model_, cache_, options_.max_batch,
                                                  options_.decode_path == DecodePath::kCudaGraphs);
  }
  if (options_.max_waiting < 0) throw std::invalid_argument("max_waiting must be >= 0");
  vocab_ = model_.config().vocab_size;
  if (options_.sample_vocab > 0) vocab_ = std::min(vocab_, options_.sample_vocab);
  for (int64_t r = options_.max_batch - 1; r >= 0; --r) free_rows_.push_back(r);
  waker_ = std::make_shared<RequestHandle::Waker>();
  waker_->fn = [this] { notify(); };
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(waker_->mu);
    waker_->fn = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stopping_ = true;
    cancel_all_ = true;
    wake_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

std::shared_ptr<RequestHandle> Scheduler::submit(GenerationRequest request) {
  const MambaConfig& config = model_.config();
  if (request.prompt.empty()) throw std::invalid_argument("the prompt is empty");
  for (int64_t id : request.prompt) {
    if (id < 0 || id >= config.vocab_size) {
      throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(config.vocab_size) + ")");
    }
  }
  if (request.max_new_tokens < 1) throw std::invalid_argument("max_new_tokens must be >= 1");
  if (std::string why = request.sampling.invalid_reason(); !why.empty()) {
    throw std::invalid_argument(why);
  }
  if (!request.adapter_key.empty() && !request.adapter_loader) {
    throw std::invalid_argument("an adapter key needs a loader");
  }
  auto entry = std::make_unique<Entry>();
  entry->handle = std::make_shared<RequestHandle>();
  entry->handle->waker_ = waker_;
  entry->submitted = Clock::now();
  const std::string key = request.adapter_key;
  entry->request = std::move(request);
  std::shared_ptr<RequestHandle> handle = entry->handle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) throw NotAccepting("the server is draining and accepts no new requests");
    // The bound is on requests that must wait for a row: arrivals the next step will admit into free
    // rows do not count against it, so a burst smaller than the free rows is never refused. Requests
    // admit() has taken from the queue but not yet put in a row (their adapter may be loading) hold
    // rows already: without them a burst racing the engine would be let past the bound.
    const int64_t free_rows = std::max<int64_t>(options_.max_batch - running_count_ - admitting_, 0);
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting + free_rows) {
      throw QueueFull("the request queue is full (" + std::to_string(options_.max_waiting) +
                      " waiting, --queue-size); retry later");
    }
    waiting_.push_back(std::move(entry));
    ++waiting_by_adapter_[key];
    wake_ = true;
  }
  cv_.notify_all();
  return handle;
}

int64_t Scheduler::drain(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  accepting_ = false;
  auto idle = [this] { return waiting_.empty() && running_count_ == 0 && admitting_ == 0; };
  if (!idle_cv_.wait_until(lock, deadline, idle)) {
    cancel_all_ = true;
    wake_ = true;
    cv_.notify_all();
    idle_cv_.wait(lock, idle);
  }
  return cancelled_by_drain_;
}

SchedulerCounts Scheduler::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerCounts out;
  out.running = running_count_;
  out.waiting = static_cast<int64_t>(waiting_.size());
  for (const auto& [k, v] : running_by_adapter_) {
    if (v > 0) out.running_by_adapter[k] = v;
  }
  for (const auto& [k, v] : waiting_by_adapter_) {
    if (v > 0) out.waiting_by_adapter[k] = v;
  }
  return out;
}

void Scheduler::loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return wake_ || stopping_ || !waiting_.empty() || !running_.empty(); });
      wake_ = false;
      if (stopping_ && waiting_.empty() && running_.empty()) break;
    }
    StepInfo info;
    std::vector<std::unique_ptr<Entry>> dropped;
    take_cancelled_waiting(dropped);
    for (auto& e : dropped) finish_entry(*e, FinishReason::kCancelled);
    retire_cancelled();

    const auto t0 = Clock::now();
    const size_t before = running_.size();
    admit();
    info.admitted = static_cast<int64_t>(running_.size()) - static_cast<int64_t>(before);
    const auto t1 = Clock::now();
    if (info.admitted > 0) info.prefill_seconds = seconds_between(t0, t1);
    decode_step(info);
    info.decode_seconds = info.batch_size > 0 ? seconds_between(t1, Clock::now()) : 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      info.running = running_count_;
      info.waiting = static_cast<int64_t>(waiting_.size());
    }
    if (on_step_ && (info.admitted > 0 || info.batch_size > 0)) on_step_(info);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty() && running_count_ == 0 && admitting_ == 0) idle_cv_.notify_all();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  idle_cv_.notify_all();
}

bool Scheduler::take_cancelled_waiting(std::vector<std::unique_ptr<Entry>>& out) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (cancel_all_ || (*it)->handle->cancel_requested()) {
      --waiting_by_adapter_[(*it)->request.adapter_key];
      if (cancel_all_ && !(*it)->handle->cancel_requested()) ++cancelled_by_drain_;
      out.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  return !out.empty();
}

void Scheduler::retire_cancelled() {
  bool all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all = cancel_all_;
  }
  for (size_t i = running_.size(); i-- > 0;) {
    if (all || running_[i]->entry->handle->cancel_requested()) {
      if (all && !running_[i]->entry->handle->cancel_requested()) {
        std::lock_guard<std::mutex> lock(mu_);
        ++cancelled_by_drain_;
      }
      finish_row(i, FinishReason::kCancelled);
    }
  }
}

void Scheduler::finish_entry(Entry& entry, FinishReason reason, ErrorKind kind, const std::string& error) {
  GenerationResult result;
  result.reason = reason;
  result.error_kind = kind;
  result.error = error;
  result.prompt_tokens = static_cast<int64_t>(entry.request.prompt.size());
  result.total_seconds = seconds_between(entry.submitted, Clock::now());
  if (entry.request.on_finish) entry.request.on_finish(result);
}

void Scheduler::finish_row(size_t index, FinishReason reason) {
  std::unique_ptr<Running> r = std::move(running_[index]);
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(index));
  r->lease.release();
  free_rows_.push_back(r->row);
  {
    std::lock_guard<std::mutex> lock(mu_);
    --running_count_;
    --running_by_adapter_[r->entry->request.adapter_key];
  }
  const auto now = Clock::now();
  GenerationResult result;
  result.reason = reason;
  result.prompt_tokens = static_cast<int64_t>(r->entry->request.prompt.size());
  result.completion_tokens = r->generated;
  result.queue_seconds = seconds_between(r->entry->submitted, r->admitted);
  result.ttft_seconds = r->has_first_token ? seconds_between(r->entry->submitted, r->first_token) : 0;
  result.total_seconds = seconds_between(r->entry->submitted, now);
  if (r->entry->request.on_finish) r->entry->request.on_finish(result);
}

bool Scheduler::emit(Running& r, const float* logits_row, int64_t greedy_token, FinishReason& reason) {
  const int64_t token = greedy_token >= 0 ? greedy_token : r.sampler.sample(logits_row, vocab_);
  if (!r.has_first_token) {
    r.has_first_token = true;
    r.first_token = Clock::now();
  }
  r.last_token = token;
  const GenerationRequest& req = r.entry->request;
  if (req.stop_at_eos && token == model_.config().eos_token_id) {
    reason = FinishReason::kStop;
    return true;
  }
  ++r.generated;
  const bool keep_going = req.on_token ? req.on_token(token) : true;
  if (!keep_going) {
    reason = FinishReason::kStop;
    return true;
  }
  if (r.generated >= req.max_new_tokens) {
    reason = FinishReason::kLength;
    return true;
  }
  return false;
}

namespace {

// Greedy rows take their token from a device-side argmax; sampled rows need the logits on the CPU.
struct SampledLogits {
  at::Tensor cpu;                  // [B, V] fp32 contiguous, or undefined when every row is greedy
  std::vector<int64_t> greedy;     // per row: the argmax, or -1 when the row samples
};

SampledLogits prepare_logits(const at::Tensor& logits, int64_t vocab, const std::vector<bool>& greedy_rows) {
  SampledLogits out;
  const bool any_sampled = std::find(greedy_rows.begin(), greedy_rows.end(), false) != greedy_rows.end();
  at::Tensor narrowed = logits.narrow(1, 0, vocab);
  if (logits.device().is_cpu() || any_sampled) {
    out.cpu = narrowed.to(at::kCPU, at::kFloat).contiguous();
    out.greedy.resize(greedy_rows.size());
    for (size_t i = 0; i < greedy_rows.size(); ++i) {
      out.greedy[i] = greedy_rows[i] ? argmax(out.cpu.data_ptr<float>() + i * vocab, vocab) : -1;
    }
  } else {
    at::Tensor ids = narrowed.argmax(1).to(at::kCPU).contiguous();
    out.greedy.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  }
  return out;
}

}  // namespace

void Scheduler::admit() {
  std::vector<std::unique_ptr<Running>> batch;
  int64_t longest = 0;
  while (!free_rows_.empty()) {
    std::unique_ptr<Entry> entry;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty() || cancel_all_) break;
      const int64_t len = static_cast<int64_t>(waiting_.front()->request.prompt.size());
      const int64_t padded = (static_cast<int64_t>(batch.size()) + 1) * std::max(longest, len);
      if (!batch.empty() && padded > options_.max_prefill_tokens) break;
      entry = std::move(waiting_.front());
      waiting_.pop_front();
      --waiting_by_adapter_[entry->request.adapter_key];
      ++admitting_;
    }
    // The entry leaves admission without a row (finished with an error, or cancelled).
    auto not_admitted = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      --admitting_;
    };
    if (entry->handle->cancel_requested()) {
      not_admitted();
      finish_entry(*entry, FinishReason::kCancelled);
      continue;
    }
    SlotLease lease;
    if (!entry->request.adapter_key.empty()) {
      try {
        lease = pool_.acquire(entry->request.adapter_key, entry->request.adapter_loader);
      } catch (const AdapterPoolExhausted& e) {
        if (running_.empty() && batch.empty()) {
          not_admitted();
          finish_entry(*entry, FinishReason::kError, ErrorKind::kResourceExhausted, e.what());
          continue;
        }
        // Every slot is pinned by running rows: wait at the head of the queue until one retires.
        std::lock_guard<std::mutex> lock(mu_);
        --admitting_;
        ++waiting_by_adapter_[entry->request.adapter_key];
        waiting_.push_front(std::move(entry));
        break;
      } catch (const AdapterNotFound& e) {
        not_admitted();
        finish_entry(*entry, FinishReason::kError, ErrorKind::kNotFound, e.what());
        continue;
      } catch (const std::exception& e) {
        not_admitted();
        finish_entry(*entry, FinishReason::kError, ErrorKind::kInternal,
                     std::string("loading the adapter failed: ") + e.what());
        continue;
      }
    }
    auto r = std::make_unique<Running>(entry->request.sampling);
    r->row = free_rows_.back();
    free_rows_.pop_back();
    r->lease = std::move(lease);
    longest = std::max<int64_t>(longest, static_cast<int64_t>(entry->request.prompt.size()));
    r->entry = std::move(entry);
    batch.push_back(std::move(r));
  }
  if (batch.empty()) return;

  const int64_t B = static_cast<int64_t>(batch.size());
  const at::Device device = model_.device();
  at::Tensor tokens = at::zeros({B, longest}, at::TensorOptions().dtype(at::kLong));
  at::Tensor lengths = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  at::Tensor rows = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  at::Tensor slots = at::empty({B}, at::TensorOptions().dtype(at::kInt));
  bool any_adapter = false;
  std::vector<bool> greedy_rows(B);
  for (int64_t i = 0; i < B; ++i) {
    const auto& prompt = batch[i]->entry->request.prompt;
    std::copy(prompt.begin(), prompt.end(), tokens.data_ptr<int64_t>() + i * longest);
    lengths.data_ptr<int64_t>()[i] = static_cast<int64_t>(prompt.size());
    rows.data_ptr<int64_t>()[i] = batch[i]->row;
    slots.data_ptr<int32_t>()[i] = batch[i]->lease.slot();
    any_adapter = any_adapter || batch[i]->lease.slot() != kBaseSlot;
    greedy_rows[i] = batch[i]->entry->request.sampling.greedy();
  }
  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    admitting_ -= B;
    for (auto& r : batch) {
      ++running_count_;
      ++running_by_adapter_[r->entry->request.adapter_key];
    }
  }
  for (auto& r : batch) {
    r->admitted = now;
    running_.push_back(std::move(r));
  }
  const size_t first = running_.size() - static_cast<size_t>(B);
  std::string failure;
  try {
    at::Tensor logits = model_.prefill(tokens.to(device), lengths, rows.to(device),
                                       any_adapter ? slots.to(device) : at::Tensor(), pool_.view(), cache_);
    SampledLogits sampled = prepare_logits(logits, vocab_, greedy_rows);
    std::vector<std::pair<size_t, FinishReason>> done;
    for (int64_t i = 0; i < B; ++i) {
      FinishReason reason;
      const float* row = sampled.cpu.defined() ? sampled.cpu.data_ptr<float>() + i * vocab_ : nullptr;
      try {
        if (emit(*running_[first + i], row, sampled.greedy[i], reason)) done.emplace_back(first + i, reason);
      } catch (const std::exception& e) {
        spdlog::error("request {}: token callback failed: {}", running_[first + i]->entry->request.id, e.what());
        done.emplace_back(first + i, FinishReason::kCancelled);
      }
    }
    for (auto it = done.rbegin(); it != done.rend(); ++it) finish_row(it->first, it->second);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (failure.empty()) return;
  spdlog::error("prefill of {} rows failed: {}", B, failure);
  fail_rows(first, "prefill failed: " + failure);
}

void Scheduler::fail_rows(size_t first, const std::string& message) {
  for (size_t i = running_.size(); i-- > first;) {
    auto cb = std::move(running_[i]->entry->request.on_finish);
    running_[i]->entry->request.on_finish = [cb, message](const GenerationResult& r) {
      GenerationResult copy = r;
      copy.reason = FinishReason::kError;
      copy.error_kind = ErrorKind::kInternal;
      copy.error = message;
      if (cb) cb(copy);
    };
    finish_row(i, FinishReason::kError);
  }
}

void Scheduler::decode_step(StepInfo& info) {
  if (running_.empty()) return;
  const int64_t B = static_cast<int64_t>(running_.size());
  info.batch_size = B;
  const at::Device device = model_.device();
  at::Tensor tokens = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  at::Tensor rows = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  at::Tensor slots = at::empty({B}, at::TensorOptions().dtype(at::kInt));
  bool any_adapter = false;
  std::vector<bool> greedy_rows(B);
  for (int64_t i = 0; i < B; ++i) {
    const Running& r = *running_[i];
    tokens.data_ptr<int64_t>()[i] = r.last_token;
    rows.data_ptr<int64_t>()[i] = r.row;
    slots.data_ptr<int32_t>()[i] = r.lease.slot();
    any_adapter = any_adapter || r.lease.slot() != kBaseSlot;
    greedy_rows[i] = r.entry->request.sampling.greedy();
  }
  std::vector<std::pair<size_t, FinishReason>> done;
  std::string failure;
  try {
    at::Tensor logits =
        bucketed_ ? bucketed_->decode(tokens, rows, any_adapter ? slots : at::Tensor(), pool_.view())
                  : model_.decode(tokens.to(device), rows.to(device), any_adapter ? slots.to(device) : at::Tensor(),
                                  pool_.view(), cache_, &decode_logits_);
    SampledLogits sampled = prepare_logits(logits, vocab_, greedy_rows);
    for (int64_t i = 0; i < B; ++i) {
      FinishReason reason;
      const float* row = sampled.cpu.defined() ? sampled.cpu.data_ptr<float>() + i * vocab_ : nullptr;
      try {
        if (emit(*running_[i], row, sampled.greedy[i], reason)) done.emplace_back(i, reason);
      } catch (const std::exception& e) {
        spdlog::error("request {}: token callback failed: {}", running_[i]->entry->request.id, e.what());
        done.emplace_back(i, FinishReason::kCancelled);
      }
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    spdlog::error("decode step over {} rows failed: {}", B, failure);
    fail_rows(0, "decode failed: " + failure);
    return;
  }
  for (auto it = done.rbegin(); it != done.rend(); ++it) finish_row(it->first, it->second);
}

}  // namespace statetune::engine
