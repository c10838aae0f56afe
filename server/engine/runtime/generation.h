// Text generation as a front end sees it, over the Scheduler: a typed request (tenant, adapter, prompt
// as text or token ids, sampling, stop strings, limits) becomes a stream of typed events -- text
// deltas with the token ids that made them, then one finish (reason, matched stop string, usage).
// Everything between the scheduler's token callbacks and a client lives here, once, for every front
// end (gRPC today, HTTP next): validation against the limits, adapter resolution, incremental
// decoding (a character split across tokens is held back until complete), stop strings (found also
// when they span tokens; text that may still become one is held back) and cancellation.
// No gRPC in here.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/engine/runtime/scheduler.h"
#include "server/engine/text/streaming_decoder.h"
#include "server/engine/text/tokenizer.h"

namespace statetune::engine {

class AdapterRegistry;

// What a front end allows one request (from its flags).
struct GenerationLimits {
  int64_t max_prompt_tokens = 2048;
  int64_t max_new_tokens = 256;  // also what a request that sets no max_tokens gets
  size_t max_stop_strings = 16;
  size_t max_stop_bytes = 256;  // per stop string
};

struct TextGenerationRequest {
  std::string request_id;  // for logs
  std::string tenant;      // whose adapter `adapter` names; also the metrics label
  std::string adapter;     // empty: the base model
  std::optional<std::string> adapter_version;  // unset: the adapter's current version
  // The prompt: the token ids when there are any, otherwise `prompt_text` (UTF-8) encoded.
  std::vector<int64_t> prompt_tokens;
  std::string prompt_text;
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // 1: no limit
  std::optional<uint64_t> seed;  // unset: a random one
  int64_t max_tokens = 0;        // 0: GenerationLimits::max_new_tokens
  bool stop_at_eos = true;
  std::vector<std::string> stop;  // UTF-8; the text ends before the first one that appears
};

// Text that became final, and the ids of the tokens generated since the last delta (text and ids
// need not line up: a token can end inside a held-back character or stop-string prefix).
struct TextDelta {
  std::string text;
  std::vector<int64_t> token_ids;
  bool empty() const { return text.empty() && token_ids.empty(); }
};

struct GenerationUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // the end-of-sequence token excluded
  double queue_seconds = 0, ttft_seconds = 0, total_seconds = 0;
};

struct GenerationFinish {
  // kStop: a stop string (stop_sequence names it) or the end-of-sequence token (stop_sequence empty);
  // kLength: max_tokens generated; kCancelled: cancel() (cancelled_by_caller) or a drain that ran out
  // of time; kError: error_kind / error (the message may name server paths: log it, map the kind).
  FinishReason reason = FinishReason::kStop;
  bool cancelled_by_caller = false;
  std::string stop_sequence;
  ErrorKind error_kind = ErrorKind::kNone;
  std::string error;
  GenerationUsage usage;
};

struct GenerationEvent {
  // A delta, or (last event of a stream) the finish.
  std::optional<TextDelta> delta;
  std::optional<GenerationFinish> finish;
};

// Turns generated tokens into the text a client may see so far: decodes them incrementally, finds
// the earliest stop string (also across token boundaries) and holds back the tail that could still
// become the start of one (longest stop string - 1 bytes, never splitting a character).
class CompletionText {
 public:
  CompletionText(const Tokenizer& tokenizer, std::vector<std::string> stops);
  // Adds one token; appends what became final to `released`. Returns false once a stop string
  // appeared: the text before it was released, nothing after it ever will be.
  bool push(int64_t token, std::string& released);
  // The end of generation without a stop string: everything still held back (a character left
  // incomplete becomes U+FFFD).
  std::string finish();
  const std::string& stop_sequence() const { return stop_sequence_; }

 private:
  StreamingDecoder decoder_;
  std::vector<std::string> stops_;
  size_t hold_back_ = 0;
  std::string pending_;  // decoded, not yet released
  std::string stop_sequence_;
};

// One request in flight. next() is meant for one consumer thread; cancel() may come from any thread.
// Destroying an unfinished stream cancels it, so a front end that returns early still frees the row.
class GenerationStream {
 public:
  ~GenerationStream();
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

  // The next event: text generated since the last call (several tokens' worth when the consumer was
  // slower than the engine), or the finish, which is last. Waits until there is one, or returns
  // nullopt at `until` (use it to look at the caller's own cancellation); nullopt forever after the
  // finish was returned.
  std::optional<GenerationEvent> next(Clock::time_point until = Clock::time_point::max());
  // Idempotent; the scheduler drops the request (its row and adapter lease) at its next step and the
  // stream ends with kCancelled, cancelled_by_caller.
  void cancel();

  const std::string& request_id() const { return request_id_; }
  // The adapter version resolved at start (empty for the base model).
  const std::string& adapter_version() const { return adapter_version_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }

 private:
  friend class TextGenerator;
  struct State;
  GenerationStream() = default;

  std::shared_ptr<State> state_;
  std::shared_ptr<RequestHandle> handle_;
  std::string request_id_, adapter_version_;
  int64_t prompt_tokens_ = 0;
  bool finish_returned_ = false;
};

// A whole completion, for callers that do not stream.
struct Completion {
  std::string text;
  std::vector<int64_t> token_ids;
  std::string adapter_version;
  GenerationFinish finish;
};

// The facade, one per served model. Thread-safe.
class TextGenerator {
 public:
  // Optional timing hooks, called on the engine thread (quick, never blocking): the first token of a
  // request (seconds since it was submitted) and every later one (seconds since the previous).
  struct Observer {
    std::function<void(const std::string& tenant, double seconds)> first_token;
    std::function<void(double seconds)> inter_token;
  };

  // All must outlive the generator. `model_vocab` bounds prompt token ids.
  TextGenerator(Scheduler& scheduler, const Tokenizer& tokenizer, const AdapterRegistry& adapters, int64_t model_vocab,
                GenerationLimits limits, Observer observer = {});

  // Validates the request against the limits, resolves the adapter and queues it. Throws
  // std::invalid_argument (a sentence naming the field and the limit, safe to send), AdapterNotFound,
  // QueueFull or NotAccepting; once it returns, every outcome arrives as the stream's finish.
  std::unique_ptr<GenerationStream> start(const TextGenerationRequest& request);

  // start() and read to the end. `on_delta` (optional) sees each delta on this thread; returning
  // false cancels the request (the call still returns its finish, kCancelled).
  Completion complete(const TextGenerationRequest& request,
                      const std::function<bool(const TextDelta&)>& on_delta = {});

  const GenerationLimits& limits() const { return limits_; }

 private:
  Scheduler& scheduler_;
  const Tokenizer& tokenizer_;
  const AdapterRegistry& adapters_;
  int64_t model_vocab_;
  GenerationLimits limits_;
  Observer observer_;
};

// Throws std::invalid_argument naming `field` and the first byte that is not valid UTF-8.
void require_utf8(const std::string& field, const std::string& bytes);

}  // namespace statetune::engine
