// Wall-clock time as Unix nanoseconds: the unit of every timestamp cgoheap
// stores or sends.
#pragma once

#include <chrono>
#include <cstdint>

namespace cgoheap {

inline int64_t UnixNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace cgoheap
