// statetune datasets upload --name NAME --file PATH | list | get --id ID | delete --id ID
// statetune jobs create --dataset ID --adapter NAME [--validation-dataset ID | --validation-split
// F]
//                       [--methods state_offset,output_offset] [--lr X] [--epochs N] [--batch-size
//                       N]
//                       [--max-steps N] [--max-length N] [--warmup-steps N] [--eval-every N]
//                       [--seed S]
//                       [--early-stopping-patience N] [--watch]
// statetune jobs get --id ID | list | cancel --id ID | watch --id ID
// Address: --train-addr (STATETUNE_TRAIN_ADDR, default 127.0.0.1:50061); key: --api-key
// (STATETUNE_API_KEY).
#include "client/training_commands.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "client/training_client.h"
#include "server/common/config.h"
#include "server/engine/util/durable_file.h"

namespace statetune::cli {
namespace {
namespace v1 = ::statetune::v1;

void add_common(common::FlagSet& f) {
  f.add("train-addr", "127.0.0.1:50061", "statetune-train address host:port");
  f.add("api-key", "", "API key (sent as authorization: Bearer)");
  f.add_bool("tls", false, "use TLS (system roots unless --tls-ca)");
  f.add("tls-ca", "", "PEM file of the CA that signed the server certificate (implies --tls)");
  f.add("timeout", "60", "per-call deadline in seconds (0: none; watch has none)");
}

client::TrainingClient make_client(const common::FlagSet& f) {
  client::ClientOptions o;
  o.address = f.str("train-addr");
  o.api_key = f.str("api-key");
  o.tls = f.boolean("tls");
  o.tls_ca_file = f.str("tls-ca");
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.number("timeout") * 1000));
  return client::TrainingClient(o);
}

int fail(const grpc::Status& st) {
  std::fprintf(stderr, "statetune: %s: %s\n", client::status_code_name(st.error_code()).c_str(),
               st.error_message().c_str());
  return st.error_code() == grpc::StatusCode::UNAVAILABLE ? 3 : 2;
}

bool parse(common::FlagSet& f, int argc, char** argv) {
  if (!f.parse(argc, argv, 3)) {
    std::fputs(f.help().c_str(), stdout);
    return false;
  }
  return true;
}

std::string required(const common::FlagSet& f, const std::string& name) {
  const std::string v = f.str(name);
  if (v.empty()) throw std::invalid_argument("--" + name + " is required");
  return v;
}

void print_dataset(const v1::DatasetInfo& d) {
  std::printf("%s  %-24s %8lld examples %10lld bytes  longest %lld tokens  created %lld\n",
              d.id().c_str(), d.name().c_str(), static_cast<long long>(d.examples()),
              static_cast<long long>(d.size_bytes()),
              static_cast<long long>(d.max_example_tokens()),
              static_cast<long long>(d.created_unix()));
}

void print_job(const v1::Job& j, bool detail) {
  std::printf("%s  %-10s step %lld/%lld  loss %.4f", j.id().c_str(),
              client::job_state_name(j.state()).c_str(), static_cast<long long>(j.step()),
              static_cast<long long>(j.total_steps()), j.train_loss());
  if (j.val_loss() > 0) std::printf("  val_loss %.4f", j.val_loss());
  std::printf("  adapter %s", j.request().adapter_name().c_str());
  if (!j.adapter_version().empty()) std::printf("@%s", j.adapter_version().c_str());
  std::printf("\n");
  if (j.has_error()) {
    std::printf("  error %s: %s", j.error().code().c_str(), j.error().message().c_str());
    if (j.error().line() > 0) std::printf(" (line %lld)", static_cast<long long>(j.error().line()));
    std::printf("\n");
  }
  if (detail) {
    std::printf("  dataset %s  methods", j.request().dataset_id().c_str());
    for (const auto& m : j.request().methods()) std::printf(" %s", m.c_str());
    std::printf("  resumes %lld\n", static_cast<long long>(j.resumes()));
    for (const auto& [k, v] : j.eval_metrics()) std::printf("  eval %s = %.6g\n", k.c_str(), v);
  }
}

std::string clock_text(double seconds) {
  if (seconds < 0) seconds = 0;
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

// Follows a job to its end: a redrawn progress bar (step, loss, ETA) on a terminal, one line per
// event otherwise. Exit status 0 when the job succeeded, 1 when it failed or was cancelled.
int watch(client::TrainingClient& c, const std::string& id) {
  const bool tty = ::isatty(1);
  bool bar_open = false;
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  auto end_bar = [&] {
    if (bar_open) std::printf("\n");
    bar_open = false;
  };
  auto st = c.watch_job(id, 0, [&](const v1::JobEvent& e) {
    last = e.state();
    if (e.has_step()) {
      const auto& s = e.step();
      const double frac = s.total_steps() > 0 ? static_cast<double>(s.step()) / s.total_steps() : 0;
      const int width = 30, filled = static_cast<int>(frac * width);
      std::string bar(filled, '#');
      bar += std::string(width - filled, '-');
      std::printf("%s[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s%s", tty ? "\r" : "",
                  bar.c_str(), static_cast<long long>(s.step()),
                  static_cast<long long>(s.total_steps()), s.loss(), s.tokens_per_second(),
                  clock_text(s.eta_seconds()).c_str(), tty ? "" : "\n");
      bar_open = tty;
    } else if (e.has_eval()) {
      end_bar();
      std::printf("eval at step %lld: val_loss %.4f  token accuracy %.3f%s\n",
                  static_cast<long long>(e.eval().step()), e.eval().val_loss(),
                  e.eval().val_token_accuracy(), e.eval().improved() ? "  (best)" : "");
    } else if (e.has_checkpoint()) {
      end_bar();
      std::printf("checkpoint at step %lld\n", static_cast<long long>(e.checkpoint().step()));
    } else if (e.has_error()) {
      end_bar();
      std::printf("error %s: %s\n", e.error().code().c_str(), e.error().message().c_str());
    } else {
      end_bar();
      std::printf("%s: %s\n", client::job_state_name(e.state()).c_str(), e.state_change().c_str());
    }
    std::fflush(stdout);
    return true;
  });
  end_bar();
  if (!st.ok()) return fail(st);
  return last == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

}  // namespace

int cmd_datasets(int argc, char** argv) {
  const std::string sub = argc > 2 ? argv[2] : "";
  common::FlagSet f("statetune datasets " + sub,
                    "Manage fine-tuning data sets on statetune-train.");
  add_common(f);
  if (sub == "upload") {
    f.add("name", "", "data set name [required]");
    f.add("file", "", "JSON-lines file of {\"prompt\", \"completion\"} objects [required]");
  } else if (sub == "get" || sub == "delete") {
    f.add("id", "", "data set id [required]");
  } else if (sub != "list") {
    throw std::invalid_argument(
        "usage: statetune datasets upload|list|get|delete (--help on each)");
  }
  if (!parse(f, argc, argv)) return 0;
  auto c = make_client(f);
  if (sub == "upload") {
    v1::DatasetInfo info;
    if (auto st = c.upload_dataset(required(f, "name"),
                                   engine::read_file(required(f, "file")), &info);
        !st.ok()) {
      return fail(st);
    }
    print_dataset(info);
  } else if (sub == "list") {
    v1::ListDatasetsResponse r;
    if (auto st = c.list_datasets(&r); !st.ok()) return fail(st);
    for (const auto& d : r.datasets()) print_dataset(d);
  } else if (sub == "get") {
    v1::DatasetInfo info;
    if (auto st = c.get_dataset(required(f, "id"), &info); !st.ok()) return fail(st);
    print_dataset(info);
  } else {
    if (auto st = c.delete_dataset(required(f, "id")); !st.ok()) return fail(st);
    std::printf("deleted %s\n", f.str("id").c_str());
  }
  return 0;
}

int cmd_jobs(int argc, char** argv) {
  const std::string sub = argc > 2 ? argv[2] : "";
  common::FlagSet f("statetune jobs " + sub,
                    "Create and follow adapter-training jobs on statetune-train.");
  add_common(f);
  if (sub == "create") {
    f.add("dataset", "", "training data set id [required]");
    f.add("adapter", "", "adapter name to publish the result as [required]");
    f.add("validation-dataset", "", "validation data set id");
    f.add("validation-split", "0", "fraction of the training set held out for validation (0..0.5)");
    f.add("methods", "state_offset", "comma-separated: state_offset, output_offset, initial_state");
    f.add("lr", "0", "learning rate (0: each method's default)");
    f.add("epochs", "0", "epochs (0: 3)");
    f.add("batch-size", "0", "examples per step (0: 4)");
    f.add("max-steps", "0", "stop after this many steps (0: epochs x batches)");
    f.add("max-length", "0", "tokens per example (0: 512)");
    f.add("warmup-steps", "0", "linear warm-up steps");
    f.add("eval-every", "0", "validation every N steps (0: every epoch)");
    f.add("seed", "0", "shuffling seed");
    f.add("early-stopping-patience", "0",
          "validations without improvement before stopping (0: never)");
    f.add("checkpoint-every", "0", "steps between checkpoints (0: the service's default)");
    f.add_bool("watch", false, "follow the job until it finishes");
  } else if (sub == "get" || sub == "cancel" || sub == "watch") {
    f.add("id", "", "job id [required]");
  } else if (sub != "list") {
    throw std::invalid_argument(
        "usage: statetune jobs create|get|list|cancel|watch (--help on each)");
  }
  if (!parse(f, argc, argv)) return 0;
  auto c = make_client(f);
  v1::Job job;
  if (sub == "create") {
    v1::CreateJobRequest req;
    req.set_dataset_id(required(f, "dataset"));
    req.set_adapter_name(required(f, "adapter"));
    req.set_validation_dataset_id(f.str("validation-dataset"));
    req.set_validation_split(f.number("validation-split"));
    std::stringstream methods(f.str("methods"));
    for (std::string m; std::getline(methods, m, ',');) {
      if (!m.empty()) req.add_methods(m);
    }
    auto* hp = req.mutable_hyperparameters();
    hp->set_learning_rate(f.number("lr"));
    hp->set_epochs(f.integer("epochs"));
    hp->set_batch_size(f.integer("batch-size"));
    hp->set_max_steps(f.integer("max-steps"));
    hp->set_max_length(f.integer("max-length"));
    hp->set_warmup_steps(f.integer("warmup-steps"));
    hp->set_eval_every(f.integer("eval-every"));
    hp->set_seed(static_cast<uint64_t>(f.integer("seed")));
    hp->set_early_stopping_patience(f.integer("early-stopping-patience"));
    hp->set_checkpoint_every(f.integer("checkpoint-every"));
    if (auto st = c.create_job(req, &job); !st.ok()) return fail(st);
    print_job(job, false);
    return f.boolean("watch") ? watch(c, job.id()) : 0;
  }
  if (sub == "list") {
    v1::ListJobsResponse r;
    if (auto st = c.list_jobs(&r); !st.ok()) return fail(st);
    for (const auto& j : r.jobs()) print_job(j, false);
    return 0;
  }
  if (sub == "watch") return watch(c, required(f, "id"));
  if (sub == "get") {
    if (auto st = c.get_job(required(f, "id"), &job); !st.ok()) return fail(st);
  } else {
    if (auto st = c.cancel_job(required(f, "id"), &job); !st.ok()) return fail(st);
  }
  print_job(job, true);
  return 0;
}

}  // namespace statetune::cli
