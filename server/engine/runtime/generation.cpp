#include "server/engine/runtime/generation.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <stdexcept>

#include "server/engine/adapters/adapter_registry.h"
#include "server/engine/text/unicode.h"

namespace statetune::engine {

namespace {

// Cuts `s` at or before `n` bytes without splitting a UTF-8 character.
size_t utf8_floor(const std::string& s, size_t n) {
  if (n >= s.size()) return s.size();
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

void require_utf8(const std::string& field, const std::string& bytes) {
  const size_t bad = unicode::first_invalid_utf8(bytes);
  if (bad == std::string::npos) return;
  char hex[8];
  std::snprintf(hex, sizeof(hex), "0x%02x", static_cast<unsigned char>(bytes[bad]));
  throw std::invalid_argument(field + " is not valid UTF-8: byte " + hex + " at offset " + std::to_string(bad) +
                              " (of " + std::to_string(bytes.size()) + ") does not start a complete character");
}

CompletionText::CompletionText(const Tokenizer& tokenizer, std::vector<std::string> stops)
    : decoder_(tokenizer), stops_(std::move(stops)) {
  for (const auto& stop : stops_) hold_back_ = std::max(hold_back_, stop.empty() ? 0 : stop.size() - 1);
}

bool CompletionText::push(int64_t token, std::string& released) {
  pending_ += decoder_.push(static_cast<int32_t>(token));
  size_t best = std::string::npos;
  const std::string* matched = nullptr;
  for (const auto& stop : stops_) {
    const size_t pos = stop.empty() ? std::string::npos : pending_.find(stop);
    if (pos != std::string::npos && pos < best) {
      best = pos;
      matched = &stop;
    }
  }
  if (matched != nullptr) {
    released += pending_.substr(0, best);
    pending_.clear();
    stop_sequence_ = *matched;
    return false;
  }
  const size_t keep = std::min(hold_back_, pending_.size());
  const size_t release = utf8_floor(pending_, pending_.size() - keep);
  released += pending_.substr(0, release);
  pending_.erase(0, release);
  return true;
}

std::string CompletionText::finish() {
  if (!stop_sequence_.empty()) return {};
  std::string rest = std::move(pending_) + decoder_.flush();
  pending_.clear();
  return rest;
}

// Filled on the engine thread (the scheduler's callbacks), drained by next().
struct GenerationStream::State {
  std::mutex mu;
  std::condition_variable cv;
  TextDelta unread;
  std::optional<GenerationFinish> finish;
  std::atomic<bool> cancelled{false};  // by the stream's owner (not by a drain)

  // Engine thread only.
  CompletionText text;
  std::string tenant;
  Clock::time_point submitted, last_token;
  int64_t tokens = 0;

  State(const Tokenizer& tokenizer, std::vector<std::string> stops) : text(tokenizer, std::move(stops)) {}
};

GenerationStream::~GenerationStream() {
  if (!finish_returned_) cancel();
}

void GenerationStream::cancel() {
  if (!handle_) return;
  state_->cancelled = true;
  handle_->cancel();
}

std::optional<GenerationEvent> GenerationStream::next(Clock::time_point until) {
  if (finish_returned_) return std::nullopt;
  std::unique_lock<std::mutex> lock(state_->mu);
  auto ready = [this] { return !state_->unread.empty() || state_->finish.has_value(); };
  // wait_until(max) overflows inside libstdc++'s clock conversion; wait without a deadline instead.
  if (until == Clock::time_point::max()) {
    state_->cv.wait(lock, ready);
  } else if (!state_->cv.wait_until(lock, until, ready)) {
    return std::nullopt;
  }
  GenerationEvent event;
  if (!state_->unread.empty()) {
    event.delta.emplace();
    std::swap(*event.delta, state_->unread);
    return event;
  }
  event.finish = *state_->finish;
  finish_returned_ = true;
  return event;
}

TextGenerator::TextGenerator(Scheduler& scheduler, const Tokenizer& tokenizer, const AdapterRegistry& adapters,
                             int64_t model_vocab, GenerationLimits limits, Observer observer)
    : scheduler_(scheduler),
      tokenizer_(tokenizer),
      adapters_(adapters),
      model_vocab_(model_vocab),
      limits_(limits),
      observer_(std::move(observer)) {}

std::unique_ptr<GenerationStream> TextGenerator::start(const TextGenerationRequest& req) {
  GenerationRequest g;
  g.id = req.request_id;
  if (!req.prompt_tokens.empty()) {
    for (int64_t id : req.prompt_tokens) {
      if (id < 0 || id >= model_vocab_) {
        throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                    std::to_string(model_vocab_) + ")");
      }
    }
    g.prompt = req.prompt_tokens;
  } else if (!req.prompt_text.empty()) {
    require_utf8("the prompt `text`", req.prompt_text);
    for (int32_t id : tokenizer_.encode(req.prompt_text)) g.prompt.push_back(id);
  }
  if (g.prompt.empty()) throw std::invalid_argument("the prompt is empty: set `text` or `token_ids`");
  if (static_cast<int64_t>(g.prompt.size()) > limits_.max_prompt_tokens) {
    throw std::invalid_argument("the prompt has " + std::to_string(g.prompt.size()) + " tokens; --max-prompt-tokens is " +
                                std::to_string(limits_.max_prompt_tokens));
  }
  if (req.max_tokens < 0) throw std::invalid_argument("max_tokens must be >= 0");
  if (req.max_tokens > limits_.max_new_tokens) {
    throw std::invalid_argument("max_tokens " + std::to_string(req.max_tokens) + " is above --max-new-tokens " +
                                std::to_string(limits_.max_new_tokens));
  }
  g.max_new_tokens = req.max_tokens == 0 ? limits_.max_new_tokens : req.max_tokens;
  g.sampling.temperature = req.temperature;
  g.sampling.top_k = req.top_k;
  g.sampling.top_p = req.top_p;
  g.sampling.seed = req.seed ? *req.seed : std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
  if (std::string why = g.sampling.invalid_reason(); !why.empty()) throw std::invalid_argument(why);
  g.stop_at_eos = req.stop_at_eos;
  if (req.stop.size() > limits_.max_stop_strings) {
    throw std::invalid_argument("at most " + std::to_string(limits_.max_stop_strings) + " stop strings");
  }
  for (size_t i = 0; i < req.stop.size(); ++i) {
    if (req.stop[i].empty() || req.stop[i].size() > limits_.max_stop_bytes) {
      throw std::invalid_argument("each stop string must be 1.." + std::to_string(limits_.max_stop_bytes) + " bytes");
    }
    require_utf8("stop string " + std::to_string(i), req.stop[i]);
  }

  std::unique_ptr<GenerationStream> stream(new GenerationStream());
  stream->request_id_ = req.request_id;
  stream->prompt_tokens_ = static_cast<int64_t>(g.prompt.size());
  if (!req.adapter.empty()) {
    auto resolved = adapters_.resolve(req.tenant, req.adapter, req.adapter_version);  // validates the names
    if (!resolved) {
      throw AdapterNotFound("adapter '" + req.adapter + "'" +
                            (req.adapter_version ? " version " + *req.adapter_version : std::string()) +
                            " not found");
    }
    stream->adapter_version_ = resolved->version;
    g.adapter_key = std::move(resolved->pool_key);
    g.adapter_loader = std::move(resolved->loader);
  }

  auto state = std::make_shared<GenerationStream::State>(tokenizer_, req.stop);
  state->tenant = req.tenant;
  // The observer by value: the engine thread may still call back while the generator is destroyed.
  g.on_token = [state, observer = observer_](int64_t token) {
    const auto now = Clock::now();
    if (state->tokens == 0) {
      if (observer.first_token) observer.first_token(state->tenant, seconds_between(state->submitted, now));
    } else if (observer.inter_token) {
      observer.inter_token(seconds_between(state->last_token, now));
    }
    state->last_token = now;
    ++state->tokens;
    std::string released;
    const bool keep_going = state->text.push(token, released);
    {
      std::lock_guard<std::mutex> lock(state->mu);
      state->unread.token_ids.push_back(token);
      state->unread.text += released;
    }
    state->cv.notify_all();
    return keep_going;
  };
  g.on_finish = [state](const GenerationResult& result) {
    GenerationFinish finish;
    finish.reason = result.reason;
    finish.stop_sequence = state->text.stop_sequence();
    finish.error_kind = result.error_kind;
    finish.error = result.error;
    finish.usage.prompt_tokens = result.prompt_tokens;
    finish.usage.completion_tokens = result.completion_tokens;
    finish.usage.queue_seconds = result.queue_seconds;
    finish.usage.ttft_seconds = result.ttft_seconds;
    finish.usage.total_seconds = result.total_seconds;
    finish.cancelled_by_caller = result.reason == FinishReason::kCancelled && state->cancelled.load();
    const std::string rest = state->text.finish();
    {
      std::lock_guard<std::mutex> lock(state->mu);
      state->unread.text += rest;
      state->finish = std::move(finish);
    }
    state->cv.notify_all();
  };

  state->submitted = Clock::now();
  stream->state_ = state;
  stream->handle_ = scheduler_.submit(std::move(g));
  return stream;
}

Completion TextGenerator::complete(const TextGenerationRequest& request,
                                   const std::function<bool(const TextDelta&)>& on_delta) {
  std::unique_ptr<GenerationStream> stream = start(request);
  Completion out;
  out.adapter_version = stream->adapter_version();
  while (auto event = stream->next()) {
    if (event->delta) {
      out.text += event->delta->text;
      out.token_ids.insert(out.token_ids.end(), event->delta->token_ids.begin(), event->delta->token_ids.end());
      if (on_delta && !on_delta(*event->delta)) stream->cancel();
    } else {
      out.finish = std::move(*event->finish);
    }
  }
  return out;
}

}  // namespace statetune::engine
