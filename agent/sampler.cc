#include "agent/sampler.h"

#include <time.h>

#include <cmath>

namespace cgoheap::agent {

constinit __attribute__((tls_model("initial-exec"))) thread_local ThreadSampler t_sampler{0, 0};

namespace {

uint64_t Next(uint64_t& x) {
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return x * 0x2545f4914f6cdd1dULL;
}

uint64_t Exponential(uint64_t& rng, uint64_t mean) {
  // 53 random bits -> uniform in (0, 1].
  double u = (static_cast<double>(Next(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  double v = -std::log(u) * static_cast<double>(mean);
  return v < 1 ? 1 : static_cast<uint64_t>(v);
}

}  // namespace

bool SampleSlow(ThreadSampler& s, size_t size, uint64_t rate) {
  if (s.rng == 0) {
    // First allocation on this thread: start a countdown instead of
    // sampling it (a fresh countdown of 0 would sample every thread's first).
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s.rng = (reinterpret_cast<uint64_t>(&s) * 0x9e3779b97f4a7c15ULL) ^
            (uint64_t(ts.tv_nsec) << 20) ^ uint64_t(ts.tv_sec) ^ 1;
    const uint64_t first = Exponential(s.rng, rate);
    if (first > size) {
      s.countdown = first - size;
      return false;
    }
  }
  s.countdown = Exponential(s.rng, rate);
  return true;
}

}  // namespace cgoheap::agent
