// Fan-out of new leak findings to `cgoheap watch` streams.
//
// HeapState publishes each finding as it is made; every open Watch stream
// whose service filter matches queues it and writes it as soon as its
// previous write is done. A stream that cannot keep up (a slow client) drops
// its oldest findings beyond kMaxQueued and says so once.
//
//   WatchHub hub;
//   hub.Publish("payments", leak);          // any thread
#pragma once

#include <deque>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "cgoheap.pb.h"
#include "server/leak/leak_sink.h"

namespace cgoheap::server {

class WatchHub;

// One Watch call; deletes itself in OnDone. Thread-safe.
class WatchStream final : public grpc::ServerWriteReactor<v1::Leak> {
 public:
  WatchStream(WatchHub* hub, std::string service);
  void Deliver(const v1::Leak& leak);
  const std::string& service() const { return service_; }

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  static constexpr size_t kMaxQueued = 10000;
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  WatchHub* const hub_;
  const std::string service_;
  absl::Mutex mu_;
  std::deque<v1::Leak> queue_ ABSL_GUARDED_BY(mu_);
  v1::Leak writing_ ABSL_GUARDED_BY(mu_);
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// Thread-safe.
class WatchHub final : public LeakSink {
 public:
  void Publish(const std::string& service, const v1::Leak& leak) override;
  void Add(WatchStream* s);
  void Remove(WatchStream* s);
  size_t Count();

 private:
  absl::Mutex mu_;
  std::vector<WatchStream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cgoheap::server
