#include "server/serving/upload_limiter.h"

#include <algorithm>

#include <fmt/format.h>

namespace statetune::serving {
using Clock = std::chrono::steady_clock;

UploadLimiter::Slot::Slot(UploadLimiter& owner, std::string tenant, grpc::ServerContext* ctx)
    : owner_(owner), tenant_(std::move(tenant)), ctx_(ctx), last_activity_(Clock::now()) {}

UploadLimiter::Slot::~Slot() {
  // Under the lock: the watchdog never touches a context whose handler has returned.
  std::lock_guard<std::mutex> lock(owner_.mu_);
  owner_.open_.erase(this);
  if (--owner_.per_tenant_[tenant_] == 0) owner_.per_tenant_.erase(tenant_);
}

void UploadLimiter::Slot::touch() {
  std::lock_guard<std::mutex> lock(owner_.mu_);
  last_activity_ = Clock::now();
}

void UploadLimiter::Slot::received_all() {
  std::lock_guard<std::mutex> lock(owner_.mu_);
  receiving_ = false;
}

bool UploadLimiter::Slot::idle_cancelled() const {
  std::lock_guard<std::mutex> lock(owner_.mu_);
  return idle_cancelled_;
}

grpc::Status UploadLimiter::Slot::idle_status() const {
  return grpc::Status(grpc::StatusCode::CANCELLED,
                      fmt::format("the upload sent nothing for {:g} s (--upload-idle-seconds)",
                                  owner_.limits_.idle_timeout.count() / 1000.0));
}

UploadLimiter::UploadLimiter(UploadLimits limits) : limits_(limits), watchdog_([this] { watch(); }) {}

UploadLimiter::~UploadLimiter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

std::unique_ptr<UploadLimiter::Slot> UploadLimiter::admit(const std::string& tenant, grpc::ServerContext* ctx,
                                                          std::string* refusal) {
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int64_t>(open_.size()) >= limits_.max_uploads) {
    *refusal = std::to_string(open_.size()) + " uploads are running; --max-concurrent-uploads is " +
               std::to_string(limits_.max_uploads) + ": retry later";
    return nullptr;
  }
  auto it = per_tenant_.find(tenant);
  if (it != per_tenant_.end() && it->second >= limits_.max_uploads_per_tenant) {
    *refusal = "this caller has " + std::to_string(it->second) +
               " uploads running; --max-concurrent-uploads-per-tenant is " +
               std::to_string(limits_.max_uploads_per_tenant) + ": retry later";
    return nullptr;
  }
  ++per_tenant_[tenant];
  std::unique_ptr<Slot> slot(new Slot(*this, tenant, ctx));
  open_.insert(slot.get());
  cv_.notify_all();  // the watchdog recomputes its next deadline
  return slot;
}

int64_t UploadLimiter::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(open_.size());
}

void UploadLimiter::watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    // Sleep until the earliest idle deadline among the open uploads (touch() only moves deadlines
    // later, so waking early and re-checking is all it costs), or until a new upload arrives.
    const auto now = Clock::now();
    auto next = Clock::time_point::max();
    for (Slot* s : open_) {
      if (s->idle_cancelled_ || !s->receiving_) continue;
      const auto deadline = s->last_activity_ + limits_.idle_timeout;
      if (deadline <= now) {
        s->idle_cancelled_ = true;
        s->ctx_->TryCancel();  // the handler's blocked Read returns false
      } else {
        next = std::min(next, deadline);
      }
    }
    if (next == Clock::time_point::max()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, next);
    }
  }
}

}  // namespace statetune::serving
