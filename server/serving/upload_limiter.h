// Bounds what adapter uploads can hold: how many run at once (in all, and per caller) and how long one
// may send nothing. The synchronous gRPC server keeps a thread and the bytes received so far for every
// open upload stream, so a caller that opens many uploads and stalls them would otherwise pin threads
// and memory for as long as it likes.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/sync_stream.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "server/common/upload_assembler.h"

namespace statetune::serving {

struct UploadLimits {
  int64_t max_uploads = 8;             // --max-concurrent-uploads
  int64_t max_uploads_per_tenant = 2;  // --max-concurrent-uploads-per-tenant
  std::chrono::milliseconds idle_timeout{30000};  // --upload-idle-seconds
};

class UploadLimiter {
 public:
  // One admitted upload: holds its place until destroyed. Until received_all(), the stream is
  // cancelled if `idle_timeout` passes without touch().
  class Slot {
   public:
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    // Data arrived: the idle clock starts again.
    void touch();
    // Every byte is in: the upload keeps its place while it is stored, but no longer depends on the
    // client, so the idle clock stops.
    void received_all();
    // True once the limiter cancelled the stream for sending nothing.
    bool idle_cancelled() const;
    // What the handler answers then: CANCELLED, naming the idle limit.
    grpc::Status idle_status() const;

    // Reads the next message, restarting the idle clock when one arrives; false at the end of the
    // stream (or when the limiter cancelled it: see idle_cancelled()).
    template <class Request>
    bool read(grpc::ServerReaderInterface<Request>* reader, Request* msg) {
      if (!reader->Read(msg)) return false;
      touch();
      return true;
    }
    // Feeds the data of `msg` (already read) and of every later message to `assembler`, which
    // throws std::invalid_argument on what the header did not announce; then stops the idle clock
    // (received_all). False when the stream ended because the limiter cancelled it.
    template <class Request>
    bool receive(grpc::ServerReaderInterface<Request>* reader, Request& msg,
                 common::UploadAssembler& assembler) {
      do {
        assembler.add(msg.data());
      } while (read(reader, &msg));
      if (idle_cancelled()) return false;
      received_all();  // still counted while it is stored: the bytes stay in memory until then
      return true;
    }

   private:
    friend class UploadLimiter;
    Slot(UploadLimiter& owner, std::string tenant, grpc::ServerContext* ctx);
    UploadLimiter& owner_;
    std::string tenant_;
    grpc::ServerContext* ctx_;
    std::chrono::steady_clock::time_point last_activity_;  // guarded by owner_.mu_
    bool idle_cancelled_ = false;                           // guarded by owner_.mu_
    bool receiving_ = true;                                 // guarded by owner_.mu_
  };

  explicit UploadLimiter(UploadLimits limits);
  ~UploadLimiter();
  UploadLimiter(const UploadLimiter&) = delete;
  UploadLimiter& operator=(const UploadLimiter&) = delete;

  // A slot for one more upload by `tenant`, or nullptr with `refusal` naming the limit (the caller
  // answers RESOURCE_EXHAUSTED).
  std::unique_ptr<Slot> admit(const std::string& tenant, grpc::ServerContext* ctx, std::string* refusal);
  const UploadLimits& limits() const { return limits_; }
  // Uploads admitted and not yet finished.
  int64_t running() const;

 private:
  void watch();

  const UploadLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int64_t> per_tenant_;
  std::set<Slot*> open_;  // every live slot: what the watchdog checks
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace statetune::serving
