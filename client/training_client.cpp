#include "client/training_client.h"

#include "server/engine/util/sha256.h"

namespace statetune::client {
namespace v1 = ::statetune::v1;

TrainingClient::TrainingClient(ClientOptions options)
    : options_(options), base_(std::move(options)), stub_(v1::Training::NewStub(base_.channel())) {}

void TrainingClient::prepare(grpc::ClientContext& ctx, bool deadline) const {
  if (!options_.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + options_.api_key);
  if (deadline && options_.timeout.count() > 0)
    ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout);
}

grpc::Status TrainingClient::upload_dataset(const std::string& name, const std::string& bytes,
                                            v1::DatasetInfo* out, size_t chunk_bytes) {
  grpc::ClientContext ctx;
  prepare(ctx);
  auto writer = stub_->UploadDataset(&ctx, out);
  v1::UploadDatasetRequest msg;
  msg.mutable_header()->set_name(name);
  msg.mutable_header()->set_total_bytes(bytes.size());
  msg.mutable_header()->set_sha256(engine::Sha256::hex(bytes));
  size_t pos = 0;
  do {
    const size_t n = std::min(chunk_bytes, bytes.size() - pos);
    msg.set_data(bytes.substr(pos, n));
    pos += n;
    if (!writer->Write(msg)) break;  // the server answered early (e.g. too large): Finish says why
    msg.clear_header();
  } while (pos < bytes.size());
  writer->WritesDone();
  return writer->Finish();
}

grpc::Status TrainingClient::list_datasets(v1::ListDatasetsResponse* out) {
  grpc::ClientContext ctx;
  prepare(ctx);
  return stub_->ListDatasets(&ctx, v1::ListDatasetsRequest(), out);
}

grpc::Status TrainingClient::get_dataset(const std::string& id, v1::DatasetInfo* out) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::GetDatasetRequest req;
  req.set_id(id);
  return stub_->GetDataset(&ctx, req, out);
}

grpc::Status TrainingClient::delete_dataset(const std::string& id) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::DeleteDatasetRequest req;
  req.set_id(id);
  v1::DeleteDatasetResponse resp;
  return stub_->DeleteDataset(&ctx, req, &resp);
}

grpc::Status TrainingClient::create_job(const v1::CreateJobRequest& request, v1::Job* out) {
  grpc::ClientContext ctx;
  prepare(ctx);
  return stub_->CreateJob(&ctx, request, out);
}

grpc::Status TrainingClient::get_job(const std::string& id, v1::Job* out) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::GetJobRequest req;
  req.set_id(id);
  return stub_->GetJob(&ctx, req, out);
}

grpc::Status TrainingClient::list_jobs(v1::ListJobsResponse* out) {
  grpc::ClientContext ctx;
  prepare(ctx);
  return stub_->ListJobs(&ctx, v1::ListJobsRequest(), out);
}

grpc::Status TrainingClient::cancel_job(const std::string& id, v1::Job* out) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::CancelJobRequest req;
  req.set_id(id);
  return stub_->CancelJob(&ctx, req, out);
}

grpc::Status TrainingClient::watch_job(const std::string& id, int64_t after_seq,
                                       const std::function<bool(const v1::JobEvent&)>& on_event) {
  grpc::ClientContext ctx;
  prepare(ctx, /*deadline=*/false);
  v1::WatchJobRequest req;
  req.set_id(id);
  req.set_after_seq(after_seq);
  auto reader = stub_->WatchJob(&ctx, req);
  v1::JobEvent ev;
  bool stopped = false;
  while (reader->Read(&ev)) {
    if (!on_event(ev)) {
      stopped = true;
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status st = reader->Finish();
  return stopped ? grpc::Status::OK : st;
}

std::string job_state_name(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_VALIDATING:
      return "validating";
    case v1::JOB_STATE_QUEUED:
      return "queued";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

}  // namespace statetune::client
