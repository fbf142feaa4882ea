// Where new leak findings go as they are made (a stack starting to grow, a
// process ending with leaks). The query side's WatchHub is one; the state
// that makes findings (server/ingest/) knows only this.
#pragma once

#include <string>

#include "cgoheap.pb.h"

namespace cgoheap::server {

class LeakSink {
 public:
  virtual ~LeakSink() = default;
  // Any thread.
  virtual void Publish(const std::string& service, const v1::Leak& leak) = 0;
};

}  // namespace cgoheap::server
