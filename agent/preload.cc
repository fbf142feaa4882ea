// The LD_PRELOAD shim: defines the C allocator's entry points, forwards each
// to the next definition (glibc's, or whatever allocator the program links),
// and reports to the agent core.
//
// Ordering (docs/ARCHITECTURE.md fact 8): a free is recorded before the real free
// and an allocation after the real allocator returns, so no other thread can
// be handed the same address in between. realloc is a free of the old block
// followed by an allocation of the new one.
//
// Bootstrap: dlsym itself calls calloc before the real calloc is known; those
// few bytes come from a static arena and are never handed to the real free.
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "agent/agent.h"
#include "agent/ring.h"
#include "agent/sampled_set.h"
#include "agent/sampler.h"

namespace {

using cgoheap::ring::Api;

struct RealAllocator {
  void* (*malloc)(size_t);
  void* (*calloc)(size_t, size_t);
  void* (*realloc)(void*, size_t);
  void* (*reallocarray)(void*, size_t, size_t);
  void (*free)(void*);
  int (*posix_memalign)(void**, size_t, size_t);
  void* (*aligned_alloc)(size_t, size_t);
  void* (*memalign)(size_t, size_t);
  void* (*valloc)(size_t);
  void* (*pvalloc)(size_t);
  size_t (*malloc_usable_size)(void*);
};

constinit RealAllocator g_real{};
constinit bool g_resolving = false;

alignas(64) constinit char g_bootstrap[64 * 1024]{};
constinit std::atomic<size_t> g_bootstrap_used{0};

bool FromBootstrap(const void* p) {
  return p >= g_bootstrap && p < g_bootstrap + sizeof g_bootstrap;
}

void* BootstrapAlloc(size_t size) {
  size = (size + 15) & ~size_t{15};
  size_t off = g_bootstrap_used.fetch_add(size, std::memory_order_relaxed);
  if (off + size > sizeof g_bootstrap) return nullptr;
  return g_bootstrap + off;  // zeroed: static storage
}

template <typename T>
void Resolve(T* fn, const char* name) {
  *fn = reinterpret_cast<T>(dlsym(RTLD_NEXT, name));
}

// Test builds only (the guard agent): CGOHEAP_TEST_BOOTSTRAP makes the
// resolution allocate as an older glibc's dlsym does (a calloc while the
// real calloc is not known: from the bootstrap arena), and AgentStart
// frees that block once tracking has started, as such a program's thread
// frees dlsym's buffer when it ends. glibc 2.36 allocates nothing there.
[[maybe_unused]] constinit void* g_test_bootstrap_block = nullptr;

__attribute__((cold, noinline)) void ResolveReal() {
  g_resolving = true;
  if constexpr (cgoheap::agent::kAllocGuard) {
    if (getenv("CGOHEAP_TEST_BOOTSTRAP") != nullptr) g_test_bootstrap_block = calloc(1, 40);
  }
  Resolve(&g_real.malloc, "malloc");
  Resolve(&g_real.calloc, "calloc");
  Resolve(&g_real.realloc, "realloc");
  Resolve(&g_real.reallocarray, "reallocarray");
  Resolve(&g_real.free, "free");
  Resolve(&g_real.posix_memalign, "posix_memalign");
  Resolve(&g_real.aligned_alloc, "aligned_alloc");
  Resolve(&g_real.memalign, "memalign");
  Resolve(&g_real.valloc, "valloc");
  Resolve(&g_real.pvalloc, "pvalloc");
  Resolve(&g_real.malloc_usable_size, "malloc_usable_size");
  g_resolving = false;
}

inline void EnsureReal() {
  if (__builtin_expect(g_real.free == nullptr, 0) && !g_resolving) ResolveReal();
}

// Whether an allocation of size bytes is recorded, decided before the real
// allocator runs (the record itself comes after it returns): one load of the
// mode, and in sampled mode a thread-local countdown.
__attribute__((always_inline)) inline bool WillRecord(size_t size) {
  using cgoheap::agent::Mode;
  Mode mode = cgoheap::agent::CurrentMode();
  if (mode == Mode::kSampled) {
    return __builtin_expect(cgoheap::agent::SampleAllocation(size, cgoheap::agent::g_sample_bytes), 0);
  }
  return mode == Mode::kExact;
}

// malloc's and calloc's common case in sampled and off modes: the thread's
// countdown still above zero once size is taken off, so the allocation is
// not sampled and the entry point ends in a tail call to the real
// allocator, without a frame of its own (a malloc-bound loop spends ~10 ns
// of its own per call: a frame, a return or a test are a few per cent). No
// mode is read: off mode's countdown never reaches zero, exact mode's and
// kStarting's never leave it (agent.h, Mode). False: MallocSlow/CallocSlow
// decide, and set the countdown (CountDownOrCross left it wrong).
__attribute__((always_inline)) inline bool CountDown(size_t size) {
  return cgoheap::agent::CountDownOrCross(size);
}

// The slow path's decision, the countdown having crossed zero: the mode's,
// and the countdown set for it. kStarting: false (nothing to record to).
inline bool DecideSlow(cgoheap::agent::Mode mode, size_t size) {
  using cgoheap::agent::Mode;
  cgoheap::agent::ThreadSampler& s = cgoheap::agent::t_sampler;
  switch (mode) {
    case Mode::kSampled:
      return cgoheap::agent::SampleSlow(s, size, cgoheap::agent::g_sample_bytes);
    case Mode::kOff:
      s.countdown = cgoheap::agent::kNeverSample;
      return false;
    case Mode::kExact:
    case Mode::kStarting:
      s.countdown = 0;  // every call slow
      return mode == Mode::kExact;
  }
  return false;
}

// The record of an allocation WillRecord chose. Always inlined, so that
// __builtin_frame_address(0) is the allocator entry point's own frame (or
// its slow path's, reached by a tail call, whose return address is the
// program's) and the unwind can start at the program's code.
__attribute__((always_inline)) inline void Recorded(Api api, void* p, size_t size) {
  if (p != nullptr) cgoheap_on_alloc(static_cast<int>(api), p, size, __builtin_frame_address(0));
}

__attribute__((always_inline)) inline void Allocated(Api api, void* p, size_t size) {
  if (WillRecord(size)) Recorded(api, p, size);
}

// Before the real free (realloc's): in sampled mode a one-byte filter load
// decides.
__attribute__((always_inline)) inline bool WillRecordFree(void* p) {
  using cgoheap::agent::Mode;
  Mode mode = cgoheap::agent::CurrentMode();
  if (mode == Mode::kSampled) {
    return __builtin_expect(cgoheap::agent::g_sampled.MaybeContains(reinterpret_cast<uint64_t>(p)), 0);
  }
  return mode == Mode::kExact;
}

inline void Freeing(void* p) {
  if (WillRecordFree(p)) cgoheap_on_free(p);
}

// free's slow path, out of line so that its common case needs no frame: the
// filter said "maybe" (a sampled block, a bootstrap block, or any block in
// exact mode and kStarting, whose filter is flooded). The fast path leaves
// NULL and the bootstrap test to this one: the bootstrap blocks are pinned
// in the filter (AgentStart).
__attribute__((noinline)) void FreeSlow(void* p) {
  if (p == nullptr || FromBootstrap(p)) return;
  EnsureReal();
  using cgoheap::agent::Mode;
  Mode mode = cgoheap::agent::CurrentMode();
  if (mode == Mode::kExact || mode == Mode::kSampled) cgoheap_on_free(p);  // sampled: if it is one
  g_real.free(p);
}

// malloc's and calloc's slow paths, reached by a tail call from the entry
// point (so the frame the unwind starts from has the program's return
// address): the countdown crossed zero (CountDown). Before the real
// allocator is known, dlsym's own allocations come from the bootstrap arena.
__attribute__((noinline)) void* MallocSlow(size_t size) {
  const cgoheap::agent::Mode mode = cgoheap::agent::CurrentMode();
  if (__builtin_expect(mode == cgoheap::agent::Mode::kStarting, 0)) {
    EnsureReal();
    if (g_real.malloc == nullptr) {
      cgoheap::agent::t_sampler.countdown = 0;  // every call slow (DecideSlow's kStarting)
      return BootstrapAlloc(size);
    }
  }
  bool record = DecideSlow(mode, size);
  void* p = g_real.malloc(size);
  if (record) Recorded(Api::kMalloc, p, size);
  return p;
}

__attribute__((noinline)) void* CallocSlow(size_t n, size_t size) {
  const cgoheap::agent::Mode mode = cgoheap::agent::CurrentMode();
  if (__builtin_expect(mode == cgoheap::agent::Mode::kStarting, 0)) {
    if (g_resolving) {
      cgoheap::agent::t_sampler.countdown = 0;  // every call slow (DecideSlow's kStarting)
      size_t total;
      if (__builtin_mul_overflow(n, size, &total)) return nullptr;
      return BootstrapAlloc(total);
    }
    EnsureReal();
  }
  bool record = DecideSlow(mode, n * size);
  void* p = g_real.calloc(n, size);
  if (record) Recorded(Api::kCalloc, p, n * size);
  return p;
}

__attribute__((constructor(101))) void AgentStart() {
  EnsureReal();
  // Every bootstrap block was handed out by now (dlsym's allocations; any
  // later one has the real allocator): pin their starts in the sampled
  // filter, so that sampled-mode free sends them to FreeSlow, which never
  // hands them to the real free. The pinned bytes cost other addresses a
  // false "maybe" at the rate of (used / 16) / 32768.
  cgoheap::agent::g_sampled.Pin(reinterpret_cast<uint64_t>(g_bootstrap),
                                reinterpret_cast<uint64_t>(g_bootstrap) +
                                    g_bootstrap_used.load(std::memory_order_relaxed));
  // The entry points' fast paths call the real allocator without testing
  // for it: the mode stays kStarting (every call on its slow path) unless
  // every function resolved (glibc has them all).
  const RealAllocator& r = g_real;
  if (r.malloc == nullptr || r.calloc == nullptr || r.realloc == nullptr || r.reallocarray == nullptr ||
      r.free == nullptr || r.posix_memalign == nullptr || r.aligned_alloc == nullptr ||
      r.memalign == nullptr || r.valloc == nullptr || r.pvalloc == nullptr ||
      r.malloc_usable_size == nullptr) {
    return;
  }
  // Tracking starts in sampled or exact mode; anything else (not asked
  // for, no ring) is off. Until then every call takes its slow path.
  cgoheap::agent::Initialize();
  if (cgoheap::agent::CurrentMode() == cgoheap::agent::Mode::kStarting) {
    cgoheap::agent::EnterMode(cgoheap::agent::Mode::kOff);
  }
  if constexpr (cgoheap::agent::kAllocGuard) {
    if (g_test_bootstrap_block != nullptr) free(g_test_bootstrap_block);
  }
}

}  // namespace

extern "C" {

// The fast paths read no mode (agent.h, Mode): malloc and calloc the
// thread's countdown, free the filter; both send every call of exact mode
// and kStarting to the slow paths, which read it.
__attribute__((visibility("default"))) void* malloc(size_t size) {
  cgoheap::agent::CheckNotInHook();
  if (__builtin_expect(CountDown(size), 1)) return g_real.malloc(size);
  return MallocSlow(size);
}

__attribute__((visibility("default"))) void* calloc(size_t n, size_t size) {
  cgoheap::agent::CheckNotInHook();
  if (__builtin_expect(CountDown(n * size), 1)) return g_real.calloc(n, size);
  return CallocSlow(n, size);
}

// A block the filter does not hold is neither sampled nor from the
// bootstrap arena (pinned there before the mode leaves kStarting), and goes
// straight to the real free (NULL too, unless its byte is taken: glibc's
// free returns at once for it, FreeSlow as well). Off mode's filter holds
// only the pins (and, in a fork child of a sampled process, the parent's
// samples, which FreeSlow just frees).
__attribute__((visibility("default"))) void free(void* p) {
  if (__builtin_expect(!cgoheap::agent::g_sampled.MaybeContainsFast(reinterpret_cast<uint64_t>(p)), 1)) {
    return g_real.free(p);
  }
  FreeSlow(p);
}

}  // extern "C"

namespace {

// realloc and reallocarray: api names the entry point the program called.
// Inlined into each, so that the frame the unwind starts from is theirs.
__attribute__((always_inline)) inline void* Reallocate(Api api, void* old, size_t size) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  if (FromBootstrap(old)) {
    void* p = malloc(size);
    if (p != nullptr) {
      size_t avail = static_cast<size_t>(g_bootstrap + sizeof g_bootstrap - static_cast<char*>(old));
      memcpy(p, old, size < avail ? size : avail);
    }
    return p;
  }
  if (old == nullptr) {
    void* p = g_real.realloc(nullptr, size);
    Allocated(api, p, size);
    return p;
  }
  // A size no allocator can give (glibc refuses anything over PTRDIFF_MAX
  // before touching the block): the block stays as it was recorded.
  if (size > static_cast<size_t>(PTRDIFF_MAX)) return g_real.realloc(old, size);
  Freeing(old);
  void* p = g_real.realloc(old, size);
  if (p != nullptr) {
    Allocated(api, p, size);
  } else if (size != 0) {
    // Failed: the old block is still live. Its original stack is gone, so it
    // is re-recorded here with the stack of the failed realloc.
    Allocated(api, old, g_real.malloc_usable_size ? g_real.malloc_usable_size(old) : 0);
  }
  return p;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* realloc(void* old, size_t size) {
  return Reallocate(Api::kRealloc, old, size);
}

__attribute__((visibility("default"))) void* reallocarray(void* old, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return Reallocate(Api::kReallocarray, old, total);
}

__attribute__((visibility("default"))) int posix_memalign(void** out, size_t align, size_t size) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  int rc = g_real.posix_memalign(out, align, size);
  if (rc == 0) Allocated(Api::kPosixMemalign, *out, size);
  return rc;
}

__attribute__((visibility("default"))) void* aligned_alloc(size_t align, size_t size) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  void* p = g_real.aligned_alloc(align, size);
  Allocated(Api::kAlignedAlloc, p, size);
  return p;
}

__attribute__((visibility("default"))) void* memalign(size_t align, size_t size) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  void* p = g_real.memalign(align, size);
  Allocated(Api::kMemalign, p, size);
  return p;
}

__attribute__((visibility("default"))) void* valloc(size_t size) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  void* p = g_real.valloc(size);
  Allocated(Api::kValloc, p, size);
  return p;
}

__attribute__((visibility("default"))) void* pvalloc(size_t size) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  void* p = g_real.pvalloc(size);
  Allocated(Api::kPvalloc, p, size);
  return p;
}

__attribute__((visibility("default"))) size_t malloc_usable_size(void* p) {
  if (p == nullptr) return 0;
  if (FromBootstrap(p)) return 0;
  EnsureReal();
  return g_real.malloc_usable_size(p);
}

}  // extern "C"
