// Continuous batching over one MambaModel: a single engine thread owns the model, its StateCache
// (one row per running sequence) and drives the AdapterPool. Requests queue in a bounded waiting
// queue; every step the engine
//   1. drops cancelled requests (waiting or running) and frees their cache rows and adapter leases,
//   2. admits waiting requests into free cache rows: acquires each one's adapter lease and prefills
//      them together in one batch (each row with its own adapter slot), sampling their first token,
//   3. runs one decode step over ALL running rows at once -- rows of different tenants and adapters
//      share the batch through the per-row `slots` tensor -- and samples each row's next token,
//   4. retires finished rows at once (end-of-sequence, max tokens, the sink asked to stop).
// A Mamba sequence's whole context is its fixed-size recurrent state, so a running row costs the
// same at every step: no paging, no preemption.
//
// Token events are delivered through callbacks ON THE ENGINE THREAD: they must be quick and must
// not block (push to a queue, notify, return). A callback may ask to stop the request (stop strings).
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "server/engine/adapters/adapter_pool.h"
#include "server/engine/model/bucketed_decoder.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/runtime/sampler.h"
#include "server/engine/util/engine_error.h"

namespace statetune::engine {

using Clock = std::chrono::steady_clock;

// submit() refusals.
class QueueFull : public EngineError {
 public:
  explicit QueueFull(const std::string& message) : EngineError(ErrorKind::kResourceExhausted, message) {}
};
class NotAccepting : public EngineError {  // draining or stopped
 public:
  explicit NotAccepting(const std::string& message) : EngineError(ErrorKind::kUnavailable, message) {}
};

enum class FinishReason {
  kStop,       // end-of-sequence token, or the token callback asked to stop (stop string)
  kLength,     // max_new_tokens generated
  kCancelled,  // cancelled by the client, or by the server when a drain ran out of time
  kError,      // see GenerationResult::error / error_kind
};
const char* finish_reason_name(FinishReason reason);

struct GenerationResult {
  FinishReason reason = FinishReason::kStop;
  ErrorKind error_kind = ErrorKind::kNone;
  std::string error;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // tokens handed to on_token (the end-of-sequence token excluded)
  double queue_seconds = 0;       // submit -> prefilled into the running batch
  double ttft_seconds = 0;        // submit -> first token (0 when none)
  double total_seconds = 0;       // submit -> finished
};

struct GenerationRequest {
  std::string id;  // for logs
  std::vector<int64_t> prompt;  // non-empty, ids in [0, vocab_size)
  // Adapter: empty key = the base model. The loader runs (on the engine thread) on a pool miss.
  std::string adapter_key;
  AdapterPool::Loader adapter_loader;
  SamplingParams sampling;
  int64_t max_new_tokens = 16;  // >= 1
  bool stop_at_eos = true;
  // Called for each generated token, in order. Return false to finish the request (reason kStop).
  std::function<bool(int64_t token)> on_token;
  // Called exactly once, last, when the request leaves the engine for any reason.
  std::function<void(const GenerationResult&)> on_finish;
};

// The caller's side of a submitted request: cancel it from any thread.
class RequestHandle {
 public:
  // Idempotent; the engine finishes the request (reason kCancelled) at its next step, freeing its
  // cache row and lease. No effect once the request has finished.
  void cancel();
  bool cancel_requested() const { return cancelled_.load(); }

 private:
  friend class Scheduler;
  std::atomic<bool> cancelled_{false};
  struct Waker;
  std::shared_ptr<Waker> waker_;
};

enum class DecodePath { kDirect, kBucketed, kCudaGraphs };

struct SchedulerOptions {
  int64_t max_batch = 32;          // running rows (= StateCache rows)
  // Requests that may wait for a free row; submit() beyond it throws QueueFull. Arrivals that free
  // rows will take at the next step are not counted.
  int64_t max_waiting = 64;
  int64_t max_prefill_tokens = 4096;  // padded tokens (rows x longest prompt) per admission batch
  int64_t sample_vocab = 0;        // sample from ids [0, sample_vocab); 0 = all logits columns
  // How a decode step runs: straight through MambaModel::decode, or on batch-size buckets of fixed
  // buffers (BucketedDecoder), eagerly or replayed as one CUDA graph per bucket (a CUDA model).
  DecodePath decode_path = DecodePath::kDirect;
};

// One engine step, for metrics.
struct StepInfo {
  int64_t admitted = 0;      // rows prefilled this step
  int64_t batch_size = 0;    // rows in this step's decode (0 when nothing ran)
  int64_t running = 0;       // after the step
  int64_t waiting = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

struct SchedulerCounts {
  int64_t running = 0, waiting = 0;
  // Requests per adapter key (empty key = base model), for routing metadata.
  std::map<std::string, int64_t> running_by_adapter, waiting_by_adapter;
};

class Scheduler {
 public:
  // Starts the engine thread. `model` and `pool` must outlive the scheduler; the model is driven only
  // by the engine thread from now on. `on_step` (optional) runs on the engine thread after each step.
  Scheduler(MambaModel& model, AdapterPool& pool, const SchedulerOptions& options,
            std::function<void(const StepInfo&)> on_step = nullptr);
  // Cancels everything still queued or running and joins the engine thread.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. Throws std::invalid_argument (bad prompt ids, max_new_tokens, sampling
  // parameters), QueueFull, or NotAccepting after drain()/stop began. Never calls the callbacks on
  // the calling thread.
  std::shared_ptr<RequestHandle> submit(GenerationRequest request);

  // Stops admitting new submissions, lets queued and running requests finish until `deadline`, then
  // cancels whatever remains. Returns when the engine is idle. Returns the number cancelled.
  int64_t drain(Clock::time_point deadline);

  SchedulerCounts counts() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Entry;
  struct Running;

  void loop();
  void notify();
  bool take_cancelled_waiting(std::vector<std::unique_ptr<Entry>>& out);
  void retire_cancelled();
  void admit();
  void decode_step(StepInfo& info);
  // Finishes a running row: releases its lease and cache row, calls on_finish.
  void finish_row(size_t index, FinishReason reason);
  // Finishes running rows [first, end) with an internal error (the model threw).
  void fail_rows(size_t first, const std::string& message);
  void finish_entry(Entry& entry, FinishReason reason, ErrorKind kind = ErrorKind::kNone,
                    const std::string& error = "");
  // Samples the next token of running row `r` from `logits_row`, emits it and decides whether the
  // row finished. Returns true when it did (the caller removes it).
  bool emit(Running& r, const float* logits_row, int64_t greedy_token, FinishReason& reason);

  MambaModel& model_;
  AdapterPool& pool_;
  SchedulerOptions options_;
  std::function<void(const StepInfo&)> on_step_;
  StateCache cache_;
  std::unique_ptr<BucketedDecoder> bucketed_;  // unless decode_path is kDirect
  at::Tensor decode_logits_;  // decode_step's logits, reused step to step (MambaModel::decode logits_out)
  int64_t vocab_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;  // the engine went idle (drain waits on it)
  int64_t cancelled_by_drain_ = 0;
  std::shared_ptr<RequestHandle::Waker> waker_;
  std::deque<std::unique_ptr<Entry>> waiting_;
  std::map<std::string, int64_t> waiting_by_adapter_, running_by_adapter_;
  int64_t running_count_ = 0;
  int64_t admitting_ = 0;  // taken from waiting_ by admit(), not yet running or finished
  bool accepting_ = true;
  bool stopping_ = false;
  bool wake_ = false;
  bool cancel_all_ = false;

  // Engine thread only.
  std::vector<std::unique_ptr<Running>> running_;
  std::vector<int64_t> free_rows_;

  std::thread thread_;
};

}  // namespace statetune::engine
