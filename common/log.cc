#include "common/log.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace cgoheap {

void LogWarning(const std::string& message) {
  char stamp[32];
  time_t now = time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::string line = std::string(stamp) + " warning: " + message + "\n";
  (void)!write(2, line.data(), line.size());
}

}  // namespace cgoheap
