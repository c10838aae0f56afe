// A training job's parameters: the CreateJobRequest as JSON (proto field names), read back from the
// job store, turned into checked hyper-parameters with defaults filled. On its own, without the runner,
// so that it can be tested and fuzzed without a model (tests/fuzz/job_params_fuzz.cpp).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace statetune::training {

// The hyper-parameters of a job spec (CreateJobRequest JSON, proto field names) with defaults
// filled.
struct JobParams {
  std::vector<std::string> methods;
  double learning_rate = 0;
  int64_t epochs = 3, batch_size = 4, max_steps = 0, max_length = 512, warmup_steps = 0,
          eval_every = 0;
  uint64_t seed = 0;
  int64_t early_stopping_patience = 0, checkpoint_every = 0;
  double validation_split = 0;
  std::string dataset_id, validation_dataset_id, adapter_name;
};
// Throws std::invalid_argument naming the field that is out of range or of the wrong type.
JobParams parse_job_params(const nlohmann::json& spec);

}  // namespace statetune::training
