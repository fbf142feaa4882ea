// Poisson sampling by bytes, as Go's MemProfileRate, tcmalloc and jemalloc
// do it: each thread counts down an exponentially distributed number of bytes
// (mean: the sampling rate) and samples the allocation that crosses zero. An
// allocation of s bytes is then sampled with probability 1 - exp(-s/rate),
// so weighting each sample by 1/p keeps bytes and blocks unbiased.
//
// The fast path is a thread-local subtraction and a predictable branch.
//
//   if (SampleAllocation(size, rate)) { ...record... }
#pragma once

#include <cstddef>
#include <cstdint>

namespace cgoheap::agent {

// Off mode's countdown (agent.h, Mode): no thread allocates 2^62 bytes.
inline constexpr int64_t kNeverSample = int64_t{1} << 62;

struct ThreadSampler {
  int64_t countdown;  // bytes until the next sample
  uint64_t rng;       // xorshift64* state; 0 until first use
};

extern constinit __attribute__((tls_model("initial-exec"))) thread_local ThreadSampler t_sampler;

// Slow path: the countdown crossed zero (or was never started).
bool SampleSlow(ThreadSampler& s, size_t size, uint64_t rate);

inline bool SampleAllocation(size_t size, uint64_t rate) {
  ThreadSampler& s = t_sampler;
  s.countdown = static_cast<int64_t>(static_cast<uint64_t>(s.countdown) - size);  // wraps, no UB
  if (__builtin_expect(s.countdown > 0, 1)) return false;
  return SampleSlow(s, size, rate);
}

}  // namespace cgoheap::agent
