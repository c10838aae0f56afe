// statetune-train's OpenAI-style HTTP routes (--http-listen): files and fine-tuning jobs in OpenAI's
// shapes, over the same TrainingCore the gRPC service calls.
//   POST   /v1/files                               multipart: purpose=fine-tune, file (JSONL: chat
//                                                  {"messages": [...]} or {"prompt", "completion"})
//   GET    /v1/files, /v1/files/{id}
//   DELETE /v1/files/{id}
//   POST   /v1/fine_tuning/jobs                    training_file, validation_file, model, suffix, seed,
//                                                  hyperparameters {n_epochs, batch_size,
//                                                  learning_rate_multiplier, max_steps (statetune)},
//                                                  method {type: supervised | state_offset |
//                                                  output_offset | initial_state, <type>: {hyperparameters}}
//   GET    /v1/fine_tuning/jobs?after=&limit=, /v1/fine_tuning/jobs/{id}
//   POST   /v1/fine_tuning/jobs/{id}/cancel
//   GET    /v1/fine_tuning/jobs/{id}/events?after=&limit=
//   GET    /v1/fine_tuning/jobs/{id}/checkpoints?after=&limit=   from the job's "checkpoint" events
// Job statuses: validating_files, queued, running, succeeded, failed, cancelled. `fine_tuned_model` is
// the published adapter's name, usable as `model` on statetune-serve's /v1/completions at once.
#pragma once

#include <httplib.h>

#include <string>

#include "server/engine/text/chat_template.h"
#include "server/common/auth.h"
#include "server/training/training_core.h"

namespace statetune::training {

struct TrainingHttpContext {
  TrainingCore& core;
  JobStore& store;
  const common::TenantRegistry& tenants;
  std::string model_id;  // the base model's id: `model` of a job
  engine::ChatTemplate chat_template;
  // statetune_train_rpc_errors_total{method, code}: failed HTTP calls are counted there too, the
  // method being the route ("POST /v1/files") and the code gRPC's name for the status.
  prometheus::Family<prometheus::Counter>& errors;
};

// The context must outlive the server.
void add_training_routes(httplib::Server& server, const TrainingHttpContext& context);

}  // namespace statetune::training
