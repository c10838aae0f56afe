// Client for statetune-train (statetune.v1.Training): data set uploads, jobs and job watching, with
// the same options (address, API key, TLS, deadline) as the serving client. Blocking and
// thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "client/statetune_client.h"
#include "statetune/v1/training.grpc.pb.h"

namespace statetune::client {

class TrainingClient {
 public:
  explicit TrainingClient(ClientOptions options);

  // Uploads JSON-lines bytes in chunks of `chunk_bytes`, with their size and SHA-256.
  grpc::Status upload_dataset(const std::string& name, const std::string& bytes,
                              statetune::v1::DatasetInfo* out,
                              size_t chunk_bytes = size_t{1} << 20);
  grpc::Status list_datasets(statetune::v1::ListDatasetsResponse* out);
  grpc::Status get_dataset(const std::string& id, statetune::v1::DatasetInfo* out);
  grpc::Status delete_dataset(const std::string& id);
  grpc::Status create_job(const statetune::v1::CreateJobRequest& request, statetune::v1::Job* out);
  grpc::Status get_job(const std::string& id, statetune::v1::Job* out);
  grpc::Status list_jobs(statetune::v1::ListJobsResponse* out);
  grpc::Status cancel_job(const std::string& id, statetune::v1::Job* out);
  // Streams the job's events after `after_seq` until the job finishes (or `on_event` returns false,
  // which cancels the call and returns OK). Ignores the per-call deadline: training takes long.
  grpc::Status watch_job(const std::string& id, int64_t after_seq,
                         const std::function<bool(const statetune::v1::JobEvent&)>& on_event);

 private:
  void prepare(grpc::ClientContext& ctx, bool deadline = true) const;

  ClientOptions options_;
  Client base_;  // owns the channel (TLS and message-size settings)
  std::unique_ptr<statetune::v1::Training::Stub> stub_;
};

// "queued", "running", ... for a JobState.
std::string job_state_name(statetune::v1::JobState state);

}  // namespace statetune::client
