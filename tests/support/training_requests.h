// What the statetune-train integration suites send: a small data set a tiny model learns from in a few
// steps, a small job request on it, and the client calls every test makes (upload, watch to the end).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/training_client.h"

namespace statetune::test_support {

// Small arithmetic-word pairs: a tiny model can lower its loss on them within a few steps.
inline std::string dataset_text(int n, int offset = 0) {
  const char* words[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    const int k = (i + offset) % 10;
    out += nlohmann::json({{"prompt", "Spell the digit " + std::to_string(k)}, {"completion", words[k]}}).dump() +
           "\n";
  }
  return out;
}

inline statetune::v1::CreateJobRequest job_request(const std::string& dataset, const std::string& adapter,
                                                   int64_t steps) {
  statetune::v1::CreateJobRequest r;
  r.set_dataset_id(dataset);
  r.set_adapter_name(adapter);
  r.add_methods("state_offset");
  r.add_methods("output_offset");
  r.mutable_hyperparameters()->set_learning_rate(0.05);
  r.mutable_hyperparameters()->set_batch_size(2);
  r.mutable_hyperparameters()->set_epochs(1000);
  r.mutable_hyperparameters()->set_max_steps(steps);
  r.mutable_hyperparameters()->set_max_length(32);
  return r;
}

// The new data set's id ("" after a failed expectation).
inline std::string upload(client::TrainingClient& c, const std::string& name, const std::string& text) {
  statetune::v1::DatasetInfo info;
  auto st = c.upload_dataset(name, text, &info, 256);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return info.id();
}

// Every event until the job ends.
inline std::vector<statetune::v1::JobEvent> watch_all(client::TrainingClient& c, const std::string& id,
                                                      int64_t after = 0) {
  std::vector<statetune::v1::JobEvent> events;
  auto st = c.watch_job(id, after, [&](const statetune::v1::JobEvent& e) {
    events.push_back(e);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.error_message();
  return events;
}

}  // namespace statetune::test_support
