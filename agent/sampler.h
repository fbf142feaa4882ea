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
inline constexpr uint64_t kNeverSample = uint64_t{1} << 62;

struct ThreadSampler {
  uint64_t countdown;  // bytes until the next sample; 0: the next call decides
  uint64_t rng;        // xorshift64* state; 0 until first use
};

extern constinit __attribute__((tls_model("initial-exec"))) thread_local ThreadSampler t_sampler;

// Slow path: the countdown crossed zero (or was never started).
bool SampleSlow(ThreadSampler& s, size_t size, uint64_t rate);

// The fast path: size taken off the countdown when it stays above zero.
// A compare, not a subtraction tested for its sign: a size of 2^63 or more
// (malloc of a negative length, an overflowed calloc product) must not wrap
// the countdown round to a huge one, which would leave the thread's next
// allocations unrecorded (in exact mode, whose countdown is 0, all of them).
__attribute__((always_inline)) inline bool CountDown(ThreadSampler& s, size_t size) {
  if (__builtin_expect(size >= s.countdown, 0)) return false;
  s.countdown -= size;
  return true;
}

inline bool SampleAllocation(size_t size, uint64_t rate) {
  ThreadSampler& s = t_sampler;
  if (__builtin_expect(CountDown(s, size), 1)) return false;
  return SampleSlow(s, size, rate);
}

}  // namespace cgoheap::agent
