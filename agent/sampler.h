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
static_assert(offsetof(ThreadSampler, countdown) == 0, "CountDownOrCross subtracts at the symbol");

// Named for the allocator shim's fast path, which reaches it from assembly
// (CountDownOrCross).
extern constinit __attribute__((tls_model("initial-exec"))) thread_local ThreadSampler t_sampler
    asm("cgoheap_agent_t_sampler");

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

// The allocator shim's entry points (preload.cc): CountDown's test in one
// instruction fewer, for the price of a countdown left wrong when the
// answer is false. True: size was taken off t_sampler's countdown, which
// stays above zero. False: the countdown crossed zero, or size >= 2^64 -
// countdown (a size of 2^63 or more, an overflowed calloc product), and
// holds countdown - size modulo 2^64, which the caller's slow path must
// overwrite before it returns (every mode's does: SampleSlow, or the
// mode's fixed value). A signal handler that allocates between the two
// takes the fast path, unsampled: an allocator call in a signal handler is
// undefined behaviour anyway.
//
// On x86-64, subtract-and-branch on the thread-local word (sub sets CF on
// a borrow and ZF on zero: jbe is "size >= countdown"), which the compiler
// does not emit from C++ (it tests the result after a load, a subtract
// and a store): malloc's fast path is then four instructions. volatile:
// GCC 12 drops an asm goto whose outputs go unused (here the scratch
// register) although the manual calls asm goto implicitly volatile.
__attribute__((always_inline)) inline bool CountDownOrCross(size_t size) {
#if defined(__x86_64__)
  uint64_t offset;
  asm volatile goto(
      "movq cgoheap_agent_t_sampler@gottpoff(%%rip), %0\n\t"
      "subq %1, %%fs:(%0)\n\t"
      "jbe %l[crossed]"
      : "=&r"(offset)
      : "r"(size)
      : "cc", "memory"
      : crossed);
  return true;
crossed:
  return false;
#else
  return CountDown(t_sampler, size);
#endif
}

inline bool SampleAllocation(size_t size, uint64_t rate) {
  ThreadSampler& s = t_sampler;
  if (__builtin_expect(CountDown(s, size), 1)) return false;
  return SampleSlow(s, size, rate);
}

}  // namespace cgoheap::agent
