#include "server/query/watch_hub.h"

#include <algorithm>

namespace cgoheap::server {

WatchStream::WatchStream(WatchHub* hub, std::string service)
    : hub_(hub), service_(std::move(service)) {
  hub_->Add(this);
}

void WatchStream::Deliver(const v1::Leak& leak) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  if (queue_.size() >= kMaxQueued) queue_.pop_front();  // the client is not reading
  queue_.push_back(leak);
  if (!in_flight_) WriteNextLocked();
}

void WatchStream::WriteNextLocked() {
  if (queue_.empty() || finished_) return;
  writing_ = std::move(queue_.front());
  queue_.pop_front();
  in_flight_ = true;
  StartWrite(&writing_);
}

void WatchStream::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  in_flight_ = false;
  if (!ok) {
    if (!finished_) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watcher went away"));
    }
    return;
  }
  WriteNextLocked();
}

void WatchStream::OnCancel() {
  absl::MutexLock lock(&mu_);
  if (!finished_) {
    finished_ = true;
    Finish(grpc::Status::CANCELLED);
  }
}

void WatchStream::OnDone() {
  hub_->Remove(this);  // no Deliver can follow
  delete this;
}

void WatchHub::Add(WatchStream* s) {
  absl::MutexLock lock(&mu_);
  streams_.push_back(s);
}

size_t WatchHub::Count() {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

void WatchHub::Remove(WatchStream* s) {
  absl::MutexLock lock(&mu_);
  streams_.erase(std::remove(streams_.begin(), streams_.end(), s), streams_.end());
}

void WatchHub::Publish(const std::string& service, const v1::Leak& leak) {
  absl::MutexLock lock(&mu_);
  for (WatchStream* s : streams_) {
    if (s->service().empty() || s->service() == service) s->Deliver(leak);
  }
}

}  // namespace cgoheap::server
