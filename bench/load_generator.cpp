// statetune-loadgen: a load generator for statetune-serve (see
// bench/README.md).
//
// N client threads send streaming Generate requests over M adapters with a
// chosen popularity (none / identical / uniform / distinct / skewed) and record
// time to first token, inter-token latency and end-to-end latency on the client
// side. Scenarios run interleaved with the no-adapter scenario (none, A, none,
// B, ..., then the reverse order next round) so that drift on a shared machine
// hits both sides of every ratio. Before the scenarios it uploads the M
// adapters (R times: every round after the first is a hot swap to a new
// version) and measures upload -> servable: from the start of the upload until
// a Generate naming the adapter returns its first token.
//
// --api http sends the same requests to the OpenAI-compatible HTTP API instead (streaming
// /v1/completions with the prompt as token ids and ignore_eos). A scenario named `http:<scenario>`
// sends that scenario's requests over HTTP while the others use gRPC, so `--scenarios http:none`
// measures HTTP against gRPC side by side in one run, on one server, interleaved like any scenario.
//
// --spawn starts statetune-serve itself on a loopback port (writing a random
// model of a given shape first when no --model is given), so one command
// reproduces a benchmark.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>

#include "client/statetune_client.h"
#include "server/common/config.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/sha256.h"
#include "tests/support/subprocess.h"

namespace statetune::tools {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream b;
  b << in.rdbuf();
  return b.str();
}

// Nearest-rank percentile of an unsorted sample (0 when empty).
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

json percentiles_ms(const std::vector<double>& seconds) {
  auto ms = [&](double q) { return percentile(seconds, q) * 1000.0; };
  return {
      {"p50", ms(50)}, {"p90", ms(90)}, {"p99", ms(99)}, {"max", ms(100)}, {"n", seconds.size()}};
}

double median(std::vector<double> v) { return percentile(std::move(v), 50); }

// ---------------------------------------------------------------------------------------------------
// The spawned server.

fs::path own_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

// A sibling binary next to this one (install: bin/) or in the build tree
// (bench/ -> `tree_dir`).
fs::path find_binary(const std::string& flag, const std::string& name, const std::string& tree_dir,
                     const std::string& flag_name) {
  if (!flag.empty()) return flag;
  for (const fs::path& p : {own_dir() / name, own_dir() / ".." / tree_dir / name}) {
    if (fs::exists(p)) return fs::canonical(p);
  }
  throw std::runtime_error(name + " not found next to statetune-loadgen; pass --" + flag_name);
}

// Runs a command to completion with its output in `log`; throws with the log
// when it fails.
void run_command(std::vector<std::string> args, const fs::path& log) {
  const pid_t pid = test_support::spawn_logged(args, log);
  if (test_support::wait_exit_status(pid) != 0) {
    std::string cmd;
    for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
    throw std::runtime_error("`" + cmd + "` failed:\n" + slurp(log));
  }
}

class SpawnedServer {
 public:
  SpawnedServer(const fs::path& binary, const fs::path& work, std::vector<std::string> flags) {
    ready_ = work / "ready.json";
    log_ = work / "server.log";
    fs::remove(ready_);
    std::vector<std::string> args = {binary.string(),    "--listen", "127.0.0.1:0",
                                     "--metrics-listen", "off",      "--ready-file",
                                     ready_.string()};
    args.insert(args.end(), flags.begin(), flags.end());
    pid_ = test_support::spawn_logged(std::move(args), log_);
    const auto deadline = Clock::now() + std::chrono::seconds(300);
    while (!fs::exists(ready_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("statetune-serve exited during start:\n" + slurp(log_));
      }
      if (Clock::now() > deadline)
        throw std::runtime_error("statetune-serve never listened:\n" + slurp(log_));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // The ready file is written atomically once the port is bound; retry a
    // parse of a partial write.
    for (int i = 0;; ++i) {
      try {
        const json ready = json::parse(slurp(ready_));
        port_ = ready.at("port").get<int>();
        http_port_ = ready.value("http_port", 0);
        break;
      } catch (const std::exception&) {
        if (i > 100) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  ~SpawnedServer() { stop(); }

  int stop() {
    if (pid_ <= 0) return -1;
    const int status = test_support::signal_and_wait(pid_);
    pid_ = -1;
    return status;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string http_address() const { return "127.0.0.1:" + std::to_string(http_port_); }
  std::string log() const { return slurp(log_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0, http_port_ = 0;
  fs::path ready_, log_;
};

// Waits until the server's health check says SERVING (the model loads after the
// port is bound).
void wait_serving(client::Client& c, double timeout_s) {
  const auto t0 = Clock::now();
  while (true) {
    grpc::health::v1::HealthCheckResponse::ServingStatus st{};
    if (c.health("", &st).ok() && st == grpc::health::v1::HealthCheckResponse::SERVING) return;
    if (seconds_since(t0) > timeout_s) throw std::runtime_error("server never became SERVING");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// ---------------------------------------------------------------------------------------------------
// Requests and scenarios.

struct RequestShape {
  std::vector<int64_t> prompt;  // fixed token ids: every request has exactly this prompt length
  uint32_t max_tokens = 32;
  float temperature = 0;  // 0: greedy
  uint64_t seed = 0;
};

v1::GenerateRequest make_request(const RequestShape& shape, const std::string& adapter,
                                 uint64_t seed) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(shape.prompt.begin(), shape.prompt.end());
  if (!adapter.empty()) r.mutable_adapter()->set_name(adapter);
  r.set_max_tokens(shape.max_tokens);
  r.set_stop_at_eos(false);  // every request generates exactly max_tokens tokens
  r.set_temperature(shape.temperature);
  if (shape.temperature > 0) r.set_seed(seed);
  return r;
}

// One streaming /v1/completions call, reported like a Generate: each SSE text chunk is passed on as
// one token (its arrival time is what matters); the usage chunk at the end gives the real count, and
// tokens a chunk carried beyond one (text held back until it decodes) are credited to the last chunk.
client::GenerateResult http_generate(httplib::Client& http, const std::string& api_key, const RequestShape& shape,
                                     const std::string& adapter, uint64_t seed,
                                     const std::function<bool(const v1::TokenChunk&)>& on_chunk) {
  json body = {{"model", adapter.empty() ? "bench-base" : adapter},
               {"prompt", shape.prompt},
               {"max_tokens", shape.max_tokens},
               {"ignore_eos", true},
               {"temperature", shape.temperature},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (shape.temperature > 0) body["seed"] = seed;
  client::GenerateResult r;
  std::string pending;
  int64_t chunks = 0, usage = -1;
  std::string error;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = {{"Authorization", "Bearer " + api_key}, {"Content-Type", "application/json"}};
  req.body = body.dump();
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    pending.append(data, len);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
      const std::string event = pending.substr(0, end);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      const json j = json::parse(event.substr(6), nullptr, /*allow_exceptions=*/false);
      if (j.contains("error")) error = j["error"].value("message", "error");
      if (j.contains("usage") && j["usage"].is_object()) usage = j["usage"].value("completion_tokens", int64_t{0});
      if (j.contains("choices") && !j["choices"].empty() && !j["choices"][0].value("text", "").empty()) {
        ++chunks;
        v1::TokenChunk ch;
        ch.add_token_ids(0);
        on_chunk(ch);
      }
    }
    return true;
  };
  auto res = http.send(req);
  if (!res || res->status != 200 || !error.empty()) {
    r.status = grpc::Status(grpc::StatusCode::UNKNOWN,
                            !res ? "HTTP: " + httplib::to_string(res.error())
                                 : "HTTP " + std::to_string(res->status) + " " + error + pending.substr(0, 200));
    return r;
  }
  if (usage > chunks && chunks > 0) {
    v1::TokenChunk rest;
    for (int64_t i = chunks; i < usage; ++i) rest.add_token_ids(0);
    on_chunk(rest);
  }
  r.has_done = usage >= 0;
  r.done.mutable_usage()->set_completion_tokens(static_cast<uint32_t>(std::max<int64_t>(usage, 0)));
  r.token_ids.assign(static_cast<size_t>(std::max<int64_t>(usage, 0)), 0);  // ids are not sent over HTTP
  return r;
}

// A scenario's name without its front-end prefix ("http:uniform" -> "uniform"), and whether it had
// one.
constexpr std::string_view kHttpPrefix = "http:";
bool over_http(const std::string& scenario) { return scenario.rfind(kHttpPrefix, 0) == 0; }
std::string popularity_name(const std::string& scenario) {
  return over_http(scenario) ? scenario.substr(kHttpPrefix.size()) : scenario;
}

// Who sends what: the adapter index a client uses for its next request (-1: the
// base model).
class Popularity {
 public:
  Popularity(const std::string& name, int adapters) : name_(name), m_(adapters) {
    if (name != "none" && name != "identical" && name != "uniform" && name != "distinct" &&
        name != "skewed") {
      throw std::invalid_argument("unknown scenario '" + name +
                                  "' (none, identical, uniform, distinct, skewed)");
    }
    if (name != "none" && adapters < 1)
      throw std::invalid_argument("scenario " + name + " needs --adapters >= 1");
    // Zipf with s = 1.1 over ranks 1..M: adapter k (0-based) has weight 1 /
    // (k+1)^1.1.
    for (int k = 0; k < m_; ++k) zipf_.push_back(1.0 / std::pow(k + 1.0, 1.1));
  }
  int pick(int client, std::mt19937_64& rng) const {
    if (name_ == "none") return -1;
    if (name_ == "identical") return 0;
    if (name_ == "distinct") return client % m_;
    if (name_ == "uniform") return std::uniform_int_distribution<int>(0, m_ - 1)(rng);
    std::discrete_distribution<int> d(zipf_.begin(), zipf_.end());
    return d(rng);
  }

 private:
  std::string name_;
  int m_;
  std::vector<double> zipf_;
};

struct Sample {
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
};

struct SegmentResult {
  std::string scenario;
  int round = 0;
  double window_s = 0;             // measured window: segment start -> deadline
  int64_t requests_in_window = 0;  // completed (OK) with their last token inside the window
  int64_t tokens_in_window = 0;    // tokens whose chunk arrived inside the window
  int64_t requests_ok = 0, errors = 0;
  std::map<std::string, int64_t> error_codes;
  std::string first_error;
  std::vector<double> ttft, itl, e2e;
  std::map<int, int64_t> requests_by_adapter;
  double tokens_per_s() const { return window_s > 0 ? tokens_in_window / window_s : 0; }
  double requests_per_s() const { return window_s > 0 ? requests_in_window / window_s : 0; }
};

struct LoadOptions {
  client::ClientOptions client;
  std::string http_address;  // where the HTTP API listens ("" when the server has none)
  bool all_http = false;     // --api http: every segment over HTTP, not only `http:` scenarios
  int clients = 16;
  std::vector<std::string> adapter_names;
  RequestShape shape;
  double duration_s = 5;        // per segment (when requests_per_client == 0)
  int requests_per_client = 0;  // > 0: each client sends this many requests per segment instead
};

// One segment: every client loops until the deadline (or its request count),
// one request at a time. Throughput counts only tokens that arrived inside
// [start, deadline]: requests still running at the deadline finish, but their
// late tokens do not inflate or deflate the rate.
SegmentResult run_segment(const LoadOptions& o, const std::string& scenario, int round,
                          uint64_t seed_base) {
  SegmentResult out;
  out.scenario = scenario;
  out.round = round;
  const Popularity pop(popularity_name(scenario), static_cast<int>(o.adapter_names.size()));
  const bool http_segment = o.all_http || over_http(scenario);
  std::mutex mu;
  const bool by_count = o.requests_per_client > 0;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(o.duration_s));
  std::atomic<int64_t> last_ns{0};  // by_count: when the last request finished
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      client::Client cl(o.client);
      std::unique_ptr<httplib::Client> http;
      if (http_segment) {
        http = std::make_unique<httplib::Client>("http://" + o.http_address);
        http->set_read_timeout(120, 0);
        http->set_keep_alive(true);
        http->set_tcp_nodelay(true);
      }
      std::mt19937_64 rng(seed_base * 7919 + static_cast<uint64_t>(c) * 104729 + 1);
      SegmentResult mine;
      for (int n = 0; by_count ? n < o.requests_per_client : Clock::now() < deadline; ++n) {
        const int a = pop.pick(c, rng);
        const std::string name = a < 0 ? "" : o.adapter_names[static_cast<size_t>(a)];
        std::vector<std::pair<Clock::time_point, int>> chunks;
        const auto t0 = Clock::now();
        const auto on_chunk = [&](const v1::TokenChunk& ch) {
          chunks.emplace_back(Clock::now(), ch.token_ids_size());
          return true;
        };
        auto r = http ? http_generate(*http, o.client.api_key, o.shape, name, rng(), on_chunk)
                      : cl.generate(make_request(o.shape, name, rng()), on_chunk);
        const auto t1 = Clock::now();
        if (by_count) {
          const int64_t ns =
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - start).count();
          int64_t prev = last_ns.load();
          while (ns > prev && !last_ns.compare_exchange_weak(prev, ns)) {
          }
        }
        const auto limit = by_count ? Clock::time_point::max() : deadline;
        for (const auto& [t, k] : chunks) {
          if (t <= limit) mine.tokens_in_window += k;
        }
        const bool complete = r.status.ok() && r.has_done &&
                              r.done.usage().completion_tokens() == o.shape.max_tokens &&
                              r.token_ids.size() == o.shape.max_tokens;
        if (!complete) {
          ++mine.errors;
          const std::string code =
              r.status.ok() ? "INCOMPLETE" : client::status_code_name(r.status.error_code());
          ++mine.error_codes[code];
          if (mine.first_error.empty()) {
            mine.first_error = code + ": " +
                               (r.status.ok() ? std::to_string(r.token_ids.size()) + " of " +
                                                    std::to_string(o.shape.max_tokens) + " tokens"
                                              : r.status.error_message());
          }
          continue;
        }
        ++mine.requests_ok;
        ++mine.requests_by_adapter[a];
        if (t1 <= limit) ++mine.requests_in_window;
        mine.ttft.push_back(std::chrono::duration<double>(chunks.front().first - t0).count());
        mine.e2e.push_back(std::chrono::duration<double>(t1 - t0).count());
        // A chunk may carry several tokens (text held back until it decodes
        // cleanly): its gap is spread over them, so ITL samples are per token.
        for (size_t i = 1; i < chunks.size(); ++i) {
          const double gap =
              std::chrono::duration<double>(chunks[i].first - chunks[i - 1].first).count();
          const int k = std::max(1, chunks[i].second);
          for (int j = 0; j < k; ++j) mine.itl.push_back(gap / k);
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      out.tokens_in_window += mine.tokens_in_window;
      out.requests_in_window += mine.requests_in_window;
      out.requests_ok += mine.requests_ok;
      out.errors += mine.errors;
      for (const auto& [k, v] : mine.error_codes) out.error_codes[k] += v;
      for (const auto& [k, v] : mine.requests_by_adapter) out.requests_by_adapter[k] += v;
      if (out.first_error.empty()) out.first_error = mine.first_error;
      out.ttft.insert(out.ttft.end(), mine.ttft.begin(), mine.ttft.end());
      out.itl.insert(out.itl.end(), mine.itl.begin(), mine.itl.end());
      out.e2e.insert(out.e2e.end(), mine.e2e.begin(), mine.e2e.end());
    });
  }
  for (auto& t : threads) t.join();
  out.window_s = by_count ? last_ns.load() * 1e-9 : o.duration_s;
  return out;
}

// none, s1, none, s2, ..., none; the next round walks the scenarios in reverse.
std::vector<std::string> segment_order(const std::vector<std::string>& scenarios, int rounds) {
  std::vector<std::string> others;
  for (const auto& s : scenarios) {
    if (s != "none") others.push_back(s);
  }
  std::vector<std::string> order;
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::string> walk = others;
    if (r % 2 == 1) std::reverse(walk.begin(), walk.end());
    if (order.empty()) order.push_back("none");
    for (const auto& s : walk) {
      order.push_back(s);
      order.push_back("none");
    }
    if (others.empty()) order.push_back("none");
  }
  return order;
}

// ---------------------------------------------------------------------------------------------------
// Adapters.

// Uploads each adapter (as a new version when it exists) and times upload ->
// first token of a Generate naming it. Sequential, on an otherwise idle server.
json upload_adapters(client::Client& c, const std::vector<std::string>& names,
                     const std::vector<std::string>& files, int rounds, const RequestShape& shape,
                     int64_t* failures) {
  std::vector<double> servable, upload_only, base_first_token;
  std::string first_error;
  RequestShape one = shape;
  one.max_tokens = 1;
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string& bytes = files[(i + static_cast<size_t>(r)) % files.size()];  // a real swap
      // The same 1-token request on the base model just before: what servable costs without the
      // upload (prefill of the prompt, one decode, the round trip), to read the upload's share.
      const auto tb = Clock::now();
      double base_first = -1;
      auto b = c.generate(make_request(one, "", 1), [&](const v1::TokenChunk&) {
        if (base_first < 0) base_first = seconds_since(tb);
        return true;
      });
      if (b.status.ok() && base_first >= 0) base_first_token.push_back(base_first);
      const auto t0 = Clock::now();
      v1::AdapterInfo info;
      grpc::Status st = c.upload_adapter(names[i], bytes, &info);
      const double up = seconds_since(t0);
      if (!st.ok()) {
        ++*failures;
        if (first_error.empty())
          first_error =
              "upload: " + client::status_code_name(st.error_code()) + ": " + st.error_message();
        continue;
      }
      double first_token = -1;
      auto g = c.generate(make_request(one, names[i], 1), [&](const v1::TokenChunk&) {
        if (first_token < 0) first_token = seconds_since(t0);
        return true;
      });
      if (!g.status.ok() || first_token < 0 || g.done.adapter_version() != info.current_version()) {
        ++*failures;
        if (first_error.empty()) {
          first_error =
              "generate after upload: " + client::status_code_name(g.status.error_code()) + ": " +
              g.status.error_message() + " (version " + g.done.adapter_version() + ", uploaded " +
              info.current_version() + ")";
        }
        continue;
      }
      upload_only.push_back(up);
      servable.push_back(first_token);
    }
  }
  json j = {{"adapters", names.size()},
            {"rounds", rounds},
            {"upload_bytes", files.empty() ? 0 : files[0].size()},
            {"upload_ms", percentiles_ms(upload_only)},
            {"base_model_first_token_ms", percentiles_ms(base_first_token)},
            {"upload_to_first_token_ms", percentiles_ms(servable)},
            {"failures", *failures}};
  if (!first_error.empty()) j["first_error"] = first_error;
  return j;
}

std::string machine_line() {
  std::string load = slurp("/proc/loadavg");
  if (!load.empty() && load.back() == '\n') load.pop_back();
  return "nproc " + std::to_string(std::thread::hardware_concurrency()) + ", loadavg " + load;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

int run(int argc, char** argv) {
  common::FlagSet f("statetune-loadgen",
                    "Load generator for statetune-serve: N concurrent "
                    "streaming clients over M adapters.");
  f.add("addr", "127.0.0.1:50051", "server address host:port (ignored with --spawn)");
  f.add("api-key", "",
        "API key of the tenant the adapters are uploaded to (ignored with "
        "--spawn)");
  f.add_bool("spawn", false,
             "start statetune-serve on a loopback port for the run, and stop "
             "it after");
  f.add("server-bin", "", "statetune-serve binary for --spawn (default: next to this binary)");
  f.add("engine-bin", "",
        "statetune-engine binary for random models/adapters (default: next to "
        "this binary)");
  f.add("model", "",
        "model folder: the server's model with --spawn, and the base the "
        "random adapters are "
        "made for; empty with --spawn: a random model of "
        "--d-model/--n-layer/--vocab");
  f.add("tokenizer", "", "--spawn: the server's tokenizer.json (default: <model>/tokenizer.json)");
  f.add("d-model", "256", "random model (--spawn without --model): d_model");
  f.add("n-layer", "4", "random model: layers");
  f.add("vocab", "50280", "random model: vocabulary size (padded)");
  f.add("server-threads", "0", "--spawn: the server's --threads (0: one per core)");
  f.add("max-batch", "0", "--spawn: the server's --max-batch (0: --clients)");
  f.add("server-flags", "",
        "--spawn: more statetune-serve flags, comma-separated (e.g. "
        "--dtype,bf16)");
  f.add("adapter-files", "", "comma-separated adapter files to upload instead of random ones");
  f.add("methods", "state_offset,output_offset", "random adapters: methods");
  f.add("adapter-variants", "4", "random adapter files made (the adapter names cycle over them)");
  f.add("clients", "16", "concurrent clients (threads, one request in flight each)");
  f.add("adapters", "16", "adapters uploaded and used by the scenarios");
  f.add("scenarios", "none,identical,uniform,distinct,skewed",
        "popularity scenarios (none is always run); http:<scenario> sends one over HTTP");
  f.add("rounds", "2", "rounds of the interleaved order none,s1,none,s2,...");
  f.add("duration", "5", "seconds per segment");
  f.add("requests", "0", "> 0: requests per client per segment instead of --duration");
  f.add("warmup", "2", "seconds of base-model warm-up before measuring");
  f.add("upload-rounds", "2",
        "times each adapter is uploaded (later rounds are hot swaps to a new "
        "version)");
  f.add("prompt-len", "64", "prompt tokens per request (random token ids, fixed per run)");
  f.add("max-tokens", "32", "tokens generated per request (stop_at_eos false: always this many)");
  f.add("temperature", "0", "0: greedy; > 0: seeded sampling");
  f.add("seed", "1", "seed of prompts, adapters and sampling");
  f.add("json", "", "write the results as JSON to this file ('-': stdout)");
  f.add("api", "grpc", "grpc | http: the front end the requests go through (http: --spawn only)");
  if (!f.parse(argc, argv)) {
    std::fputs(f.help().c_str(), stdout);
    return 0;
  }
  const bool spawn = f.boolean("spawn");
  const uint64_t seed = static_cast<uint64_t>(f.integer("seed"));
  const int clients = static_cast<int>(f.integer("clients"));
  const int n_adapters = static_cast<int>(f.integer("adapters"));
  if (clients < 1 || n_adapters < 0)
    throw std::invalid_argument("--clients >= 1 and --adapters >= 0");
  std::vector<std::string> scenarios = split(f.str("scenarios"));
  bool uses_adapters = false, uses_http = f.str("api") == "http";
  for (const auto& s : scenarios) {
    Popularity(popularity_name(s), std::max(1, n_adapters));  // throws on an unknown name
    uses_adapters = uses_adapters || popularity_name(s) != "none";
    uses_http = uses_http || over_http(s);
  }
  if (uses_adapters && n_adapters < 1)
    throw std::invalid_argument("adapter scenarios need --adapters >= 1");

  const fs::path work =
      fs::temp_directory_path() / ("statetune_loadgen_" + std::to_string(::getpid()));
  fs::create_directories(work);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{work};

  // The model: given, or a random one for --spawn (statetune-engine
  // init-model).
  fs::path model_dir = f.str("model");
  json model_json;
  auto engine_bin = [&] {
    return find_binary(f.str("engine-bin"), "statetune-engine", "server/engine/tools", "engine-bin")
        .string();
  };
  if (model_dir.empty() && spawn) {
    model_dir = work / "model";
    std::fprintf(stderr, "loadgen: writing a random model (d_model %s, %s layers, vocab %s)\n",
                 f.str("d-model").c_str(), f.str("n-layer").c_str(), f.str("vocab").c_str());
    run_command(
        {engine_bin(), "init-model", "--out", model_dir.string(), "--d-model", f.str("d-model"),
         "--n-layer", f.str("n-layer"), "--vocab", f.str("vocab"), "--seed", std::to_string(seed)},
        work / "init-model.log");
    model_json["random"] = true;
  }
  int64_t vocab = f.integer("vocab");
  if (!model_dir.empty()) {
    const json c = json::parse(slurp(model_dir / "config.json"));
    vocab = c.value("vocab_size", vocab);
    model_json["dir"] = model_dir.string();
    model_json["config"] = c;
  }

  // Adapter files: the given ones, or a few random ones for the model
  // (statetune-engine init-adapter, different seeds); the M adapter names cycle
  // over them.
  std::vector<std::string> files;
  for (const auto& p : split(f.str("adapter-files"))) files.push_back(engine::read_file(p));
  if (files.empty() && uses_adapters) {
    if (model_dir.empty()) {
      throw std::invalid_argument(
          "adapter scenarios need --adapter-files or "
          "--model (random adapters for it)");
    }
    const int variants = static_cast<int>(
        std::clamp<int64_t>(f.integer("adapter-variants"), 1, std::max(1, n_adapters)));
    for (int i = 0; i < variants; ++i) {
      const fs::path p = work / ("adapter" + std::to_string(i) + ".safetensors");
      run_command({engine_bin(), "init-adapter", "--model", model_dir.string(), "--out", p.string(),
                   "--methods", f.str("methods"), "--seed", std::to_string(seed * 1000 + i),
                   "--scale", "0.5"},
                  work / "init-adapter.log");
      files.push_back(slurp(p));
    }
  }

  // The server.
  std::unique_ptr<SpawnedServer> server;
  client::ClientOptions copts;
  copts.timeout = std::chrono::seconds(120);
  json server_json;
  if (spawn) {
    if (f.str("tokenizer").empty() && !fs::exists(model_dir / "tokenizer.json")) {
      throw std::invalid_argument("--spawn: " + (model_dir / "tokenizer.json").string() +
                                  " does not exist; pass --tokenizer");
    }
    const std::string key = "loadgen-key-" + std::to_string(::getpid());
    json tenants = {
        {"tenants", {{{"name", "bench"}, {"api_keys_sha256", {engine::Sha256::hex(key)}}}}}};
    engine::write_file_durably(work / "tenants.json", tenants.dump(2));
    const int64_t max_batch = f.integer("max-batch") > 0 ? f.integer("max-batch") : clients;
    std::vector<std::string> flags = {
        "--model",
        model_dir.string(),
        "--adapters-dir",
        (work / "adapters").string(),
        "--tenants-file",
        (work / "tenants.json").string(),
        "--max-batch",
        std::to_string(max_batch),
        "--queue-size",
        std::to_string(std::max<int64_t>(64, 2 * clients)),
        "--max-new-tokens",
        std::to_string(std::max<int64_t>(256, f.integer("max-tokens"))),
        "--max-prompt-tokens",
        std::to_string(std::max<int64_t>(2048, f.integer("prompt-len"))),
        "--threads",
        f.str("server-threads"),
        "--log-level",
        "warn",
        "--drain-seconds",
        "5"};
    if (!f.str("tokenizer").empty()) flags.insert(flags.end(), {"--tokenizer", f.str("tokenizer")});
    if (uses_http) flags.insert(flags.end(), {"--http-listen", "127.0.0.1:0", "--model-id", "bench-base"});
    for (const auto& extra : split(f.str("server-flags"))) flags.push_back(extra);
    server = std::make_unique<SpawnedServer>(
        find_binary(f.str("server-bin"), "statetune-serve", "server/serving", "server-bin"), work,
        flags);
    copts.address = server->address();
    copts.api_key = key;
    server_json = {{"spawned", true}, {"flags", flags}};
  } else {
    copts.address = f.str("addr");
    copts.api_key = f.str("api-key");
    server_json = {{"spawned", false}, {"addr", copts.address}};
  }
  client::Client admin(copts);
  wait_serving(admin, 300);

  LoadOptions o;
  o.client = copts;
  o.clients = clients;
  if (f.str("api") != "grpc" && f.str("api") != "http")
    throw std::invalid_argument("--api must be grpc or http");
  if (uses_http) {
    if (!spawn) throw std::invalid_argument("--api http and http: scenarios need --spawn");
    o.http_address = server->http_address();
    o.all_http = f.str("api") == "http";
  }
  o.duration_s = f.number("duration");
  o.requests_per_client = static_cast<int>(f.integer("requests"));
  o.shape.max_tokens = static_cast<uint32_t>(f.integer("max-tokens"));
  o.shape.temperature = static_cast<float>(f.number("temperature"));
  std::mt19937_64 prng(seed);
  // Ids below 50000 are ordinary tokens of the GPT-NeoX vocabulary (no special
  // ids), any model size.
  const int64_t id_limit = std::max<int64_t>(2, std::min<int64_t>(vocab, 50000));
  for (int64_t i = 0; i < f.integer("prompt-len"); ++i) {
    o.shape.prompt.push_back(std::uniform_int_distribution<int64_t>(1, id_limit - 1)(prng));
  }
  for (int i = 0; i < (uses_adapters ? n_adapters : 0); ++i)
    o.adapter_names.push_back("bench-" + std::to_string(i));

  json result;
  result["config"] = {{"clients", clients},
                      {"api", f.str("api")},
                      {"adapters", n_adapters},
                      {"scenarios", scenarios},
                      {"rounds", f.integer("rounds")},
                      {"duration_s", o.duration_s},
                      {"requests_per_client", o.requests_per_client},
                      {"prompt_len", o.shape.prompt.size()},
                      {"max_tokens", o.shape.max_tokens},
                      {"temperature", o.shape.temperature},
                      {"seed", seed},
                      {"methods", f.str("methods")}};
  result["model"] = model_json;
  result["server"] = server_json;
  result["machine_before"] = machine_line();
  int64_t failures = 0;

  // Warm-up on the base model (first allocations, thread pools) before anything
  // is timed.
  if (f.number("warmup") > 0) {
    LoadOptions w = o;
    w.duration_s = f.number("warmup");
    w.requests_per_client = 0;
    SegmentResult warm = run_segment(w, "none", -1, seed + 999);
    result["warmup"] = {{"tokens_per_s", warm.tokens_per_s()}, {"errors", warm.errors}};
    failures += warm.errors;
  }

  if (uses_adapters) {
    std::fprintf(stderr, "loadgen: uploading %d adapters x %lld rounds\n", n_adapters,
                 static_cast<long long>(f.integer("upload-rounds")));
    int64_t upload_failures = 0;
    result["upload"] =
        upload_adapters(admin, o.adapter_names, files, static_cast<int>(f.integer("upload-rounds")),
                        o.shape, &upload_failures);
    failures += upload_failures;
  }

  // The interleaved segments.
  const auto order = segment_order(scenarios, static_cast<int>(f.integer("rounds")));
  std::vector<SegmentResult> segments;
  for (size_t i = 0; i < order.size(); ++i) {
    SegmentResult s = run_segment(o, order[i], static_cast<int>(i), seed + i);
    std::fprintf(stderr,
                 "loadgen: [%zu/%zu] %-9s %8.1f tok/s %6.2f req/s ttft p50 "
                 "%.1f ms itl p50 %.2f ms errors %lld\n",
                 i + 1, order.size(), s.scenario.c_str(), s.tokens_per_s(), s.requests_per_s(),
                 percentile(s.ttft, 50) * 1000, percentile(s.itl, 50) * 1000,
                 static_cast<long long>(s.errors));
    failures += s.errors;
    segments.push_back(std::move(s));
  }

  // Per scenario: pooled latencies, summed throughput, and ratios to the none
  // segments next to each.
  json scen = json::object();
  std::vector<std::string> names = {"none"};
  for (const auto& s : scenarios) {
    if (std::find(names.begin(), names.end(), s) == names.end()) names.push_back(s);
  }
  double none_tps = 0;
  for (const auto& name : names) {
    SegmentResult all;
    std::vector<double> paired;
    json seg_list = json::array();
    for (size_t i = 0; i < segments.size(); ++i) {
      const auto& s = segments[i];
      if (s.scenario != name) continue;
      all.window_s += s.window_s;
      all.tokens_in_window += s.tokens_in_window;
      all.requests_in_window += s.requests_in_window;
      all.requests_ok += s.requests_ok;
      all.errors += s.errors;
      for (const auto& [k, v] : s.error_codes) all.error_codes[k] += v;
      for (const auto& [k, v] : s.requests_by_adapter) all.requests_by_adapter[k] += v;
      if (all.first_error.empty()) all.first_error = s.first_error;
      all.ttft.insert(all.ttft.end(), s.ttft.begin(), s.ttft.end());
      all.itl.insert(all.itl.end(), s.itl.begin(), s.itl.end());
      all.e2e.insert(all.e2e.end(), s.e2e.begin(), s.e2e.end());
      json sj = {{"index", i}, {"tokens_per_s", s.tokens_per_s()}, {"errors", s.errors}};
      if (name != "none") {
        // The neighbouring none segments (the order always puts one on each
        // side).
        double sum = 0;
        int n = 0;
        for (size_t j : {i - 1, i + 1}) {
          if (i > 0 && j < segments.size() && segments[j].scenario == "none") {
            sum += segments[j].tokens_per_s();
            ++n;
          }
        }
        if (n > 0 && sum > 0) {
          paired.push_back(s.tokens_per_s() / (sum / n));
          sj["ratio_to_neighbouring_none"] = paired.back();
        }
      }
      seg_list.push_back(sj);
    }
    json sj = {{"segments", seg_list},
               {"requests_per_s", all.requests_per_s()},
               {"tokens_per_s", all.tokens_per_s()},
               {"requests_ok", all.requests_ok},
               {"errors", all.errors},
               {"error_codes", all.error_codes},
               {"ttft_ms", percentiles_ms(all.ttft)},
               {"itl_ms", percentiles_ms(all.itl)},
               {"e2e_ms", percentiles_ms(all.e2e)},
               {"distinct_adapters_used", all.requests_by_adapter.count(-1)
                                              ? all.requests_by_adapter.size() - 1
                                              : all.requests_by_adapter.size()}};
    if (!all.first_error.empty()) sj["first_error"] = all.first_error;
    if (name == "none") {
      none_tps = all.tokens_per_s();
    } else {
      sj["ratio_to_none"] = none_tps > 0 ? all.tokens_per_s() / none_tps : 0;
      if (!paired.empty()) {
        sj["ratio_paired_median"] = median(paired);
        sj["ratio_paired_min"] = *std::min_element(paired.begin(), paired.end());
      }
    }
    scen[name] = sj;
  }
  result["scenarios"] = scen;
  result["order"] = order;
  result["failures"] = failures;
  result["machine_after"] = machine_line();
  if (server) {
    const int rc = server->stop();
    result["server"]["exit_status"] = rc;
    if (rc != 0) {
      std::fprintf(stderr, "loadgen: statetune-serve exited with %d:\n%s\n", rc,
                   server->log().c_str());
      ++failures;
      result["failures"] = failures;
    }
  }

  // The table.
  std::printf("%s, %d clients, %d adapters, prompt %zu, max_tokens %u, %s\n",
              machine_line().c_str(), clients, n_adapters, o.shape.prompt.size(),
              o.shape.max_tokens, o.shape.temperature > 0 ? "sampled" : "greedy");
  if (result.contains("upload")) {
    const auto& u = result["upload"];
    const auto& up = u["upload_to_first_token_ms"];
    std::printf(
        "upload->servable (%zu uploads): p50 %.1f ms p99 %.1f ms max %.1f ms; upload alone p50 "
        "%.1f "
        "p99 %.1f; the same 1-token request on the base model p50 %.1f p99 %.1f; failures %lld\n",
        up["n"].get<size_t>(), up["p50"].get<double>(), up["p99"].get<double>(),
        up["max"].get<double>(), u["upload_ms"]["p50"].get<double>(),
        u["upload_ms"]["p99"].get<double>(), u["base_model_first_token_ms"]["p50"].get<double>(),
        u["base_model_first_token_ms"]["p99"].get<double>(),
        static_cast<long long>(u["failures"].get<int64_t>()));
  }
  std::printf("%-9s %8s %9s %7s %7s %7s %7s %7s %7s %6s %6s %6s %6s\n", "scenario", "req/s",
              "tok/s", "ttft50", "ttft90", "ttft99", "itl50", "itl90", "itl99", "errors", "ratio",
              "pmed", "pmin");
  for (const auto& name : names) {
    const auto& s = scen[name];
    std::printf(
        "%-9s %8.2f %9.1f %7.1f %7.1f %7.1f %7.2f %7.2f %7.2f %6lld %6.3f "
        "%6.3f %6.3f\n",
        name.c_str(), s["requests_per_s"].get<double>(), s["tokens_per_s"].get<double>(),
        s["ttft_ms"]["p50"].get<double>(), s["ttft_ms"]["p90"].get<double>(),
        s["ttft_ms"]["p99"].get<double>(), s["itl_ms"]["p50"].get<double>(),
        s["itl_ms"]["p90"].get<double>(), s["itl_ms"]["p99"].get<double>(),
        static_cast<long long>(s["errors"].get<int64_t>()), s.value("ratio_to_none", 1.0),
        s.value("ratio_paired_median", 1.0), s.value("ratio_paired_min", 1.0));
  }
  std::printf(
      "(ms; ratio: tokens/s over none's; pmed/pmin: median/min of each "
      "segment over its neighbouring none)\n");

  const std::string path = f.str("json");
  if (path == "-") {
    std::printf("%s\n", result.dump(2).c_str());
  } else if (!path.empty()) {
    engine::write_file_durably(path, result.dump(2) + "\n");
  }
  return failures == 0 ? 0 : 2;
}

}  // namespace
}  // namespace statetune::tools

int main(int argc, char** argv) {
  // A server that dies mid-run must not kill the generator with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  try {
    return statetune::tools::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "statetune-loadgen: %s\n", e.what());
    return 1;
  }
}
