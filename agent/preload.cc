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
//
// Headers (sampled mode, where the next allocator is glibc's): a sampled
// block is allocated 16 bytes larger (or by its alignment, for the memalign
// family) and handed out past a header whose last word has bit 3 set. glibc
// keeps its chunk's size word just before every block it hands out, and
// that size is a multiple of 16 with flags in bits 0-2 only (64-bit glibc:
// MALLOC_ALIGNMENT is 16; its free aborts with "invalid size" otherwise),
// so the byte at p - 8 has bit 3 set exactly for the shim's blocks. free
// tests that bit, on the cache line glibc's free reads next anyway: six
// instructions in all on x86-64 (the filter's way took nine), and no table
// of the agent's to touch. Any other next allocator (a shared jemalloc, an
// allocator with guard pages) may have nothing readable before a block:
// there free asks the sampled set's filter. Where blocks carry headers,
// every block the agent samples has one; a block may have one and not be
// sampled (realloc keeps it), and FreeSlow just strips it.
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

// A block's header (see the top): the offset back to what the real
// allocator returned, and the mark, whose low byte has bit 3 set.
constexpr uint64_t kHeaderMark = 0x6367686561700a08;
constexpr size_t kHeaderBytes = 16;

void* PutHeader(void* base, size_t offset) {
  char* p = static_cast<char*>(base) + offset;
  reinterpret_cast<uint64_t*>(p)[-2] = offset;
  reinterpret_cast<uint64_t*>(p)[-1] = kHeaderMark;
  return p;
}

// Each bootstrap block carries a header too, so that free's header test
// sends it to FreeSlow (which never hands it on) as the filter's pins do.
void* BootstrapAlloc(size_t size) {
  size = (size + 15) & ~size_t{15};
  if (size > sizeof g_bootstrap) return nullptr;
  size_t off = g_bootstrap_used.fetch_add(size + kHeaderBytes, std::memory_order_relaxed);
  if (off + size + kHeaderBytes > sizeof g_bootstrap) return nullptr;
  return PutHeader(g_bootstrap + off, kHeaderBytes);  // the rest zeroed: static storage
}

// Whether blocks carry headers: the next allocator is glibc's (set at
// start-up, before the mode leaves kStarting).
constinit bool g_headers = false;

// free's fast test (a glibc block's p - 8 is its chunk's size word).
__attribute__((always_inline)) inline bool MaybeHeadered(const void* p) {
  return (static_cast<const uint8_t*>(p)[-8] & 8) != 0;
}
// The full test, for the slow paths: only where blocks carry headers.
inline bool Headered(const void* p) {
  return g_headers && p != nullptr && static_cast<const uint64_t*>(p)[-1] == kHeaderMark;
}
inline size_t HeaderOffset(const void* p) { return static_cast<const uint64_t*>(p)[-2]; }
inline void* HeaderBase(void* p) { return static_cast<char*>(p) - HeaderOffset(p); }

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
    if (cgoheap::agent::Env("CGOHEAP_TEST_BOOTSTRAP") != nullptr) {
      g_test_bootstrap_block = calloc(1, 40);
    }
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

// Whether a block the agent will record gets a header: sampled mode's, where
// blocks carry them (exact mode's frees all take the slow path anyway).
inline bool WithHeader(cgoheap::agent::Mode mode) {
  return g_headers && mode == cgoheap::agent::Mode::kSampled;
}

// The real allocator's block of size + offset bytes (alloc(bytes) makes
// it), handed out offset bytes in: 16, or the alignment asked, a power of
// two above 16. Sizes past PTRDIFF_MAX fail as glibc fails them.
template <typename Alloc>
void* WithHeaderRoom(size_t offset, size_t size, Alloc alloc) {
  if (size > static_cast<size_t>(PTRDIFF_MAX) - offset) {
    errno = ENOMEM;
    return nullptr;
  }
  void* base = alloc(size + offset);
  return base != nullptr ? PutHeader(base, offset) : nullptr;
}

void* HeaderedMalloc(size_t size) {
  return WithHeaderRoom(kHeaderBytes, size, [](size_t n) { return g_real.malloc(n); });
}

void* HeaderedCalloc(size_t total) {
  return WithHeaderRoom(kHeaderBytes, total, [](size_t n) { return g_real.calloc(1, n); });
}

bool PowerOfTwo(size_t n) { return n != 0 && (n & (n - 1)) == 0; }

// align: a power of two.
void* HeaderedAligned(size_t align, size_t size) {
  const size_t offset = align < kHeaderBytes ? kHeaderBytes : align;
  return WithHeaderRoom(offset, size, [offset](size_t n) { return g_real.memalign(offset, n); });
}

// What the program may use of a block: the real allocator's figure, less
// the header.
size_t UsableSize(void* p) {
  if (Headered(p)) return g_real.malloc_usable_size(HeaderBase(p)) - HeaderOffset(p);
  return g_real.malloc_usable_size(p);
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
  g_real.free(Headered(p) ? HeaderBase(p) : p);
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
  void* p = record && WithHeader(mode) ? HeaderedMalloc(size) : g_real.malloc(size);
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
  size_t total;
  void* p;
  if (record && WithHeader(mode) && !__builtin_mul_overflow(n, size, &total)) {
    p = HeaderedCalloc(total);
  } else {
    p = g_real.calloc(n, size);  // an overflowing product fails there
  }
  if (record) Recorded(Api::kCalloc, p, n * size);
  return p;
}

// free's target for a block without a header (where blocks carry them):
// the real free in sampled and off modes, the slow path in exact mode and
// kStarting, whose frees are all recorded. Written by EnterMode (through
// OnModeEntered), at start-up or in a fork child: one thread.
using FreeFn = void (*)(void*);
constinit FreeFn g_free_next = FreeSlow;

void OnModeEntered(cgoheap::agent::Mode m) {
  using cgoheap::agent::Mode;
  g_free_next = (m == Mode::kSampled || m == Mode::kOff) && g_real.free != nullptr ? g_real.free : FreeSlow;
}

// free where blocks carry headers (see the top): a block without one goes
// on at once (NULL too: glibc's free returns for it, FreeSlow as well).
void HeaderFree(void* p) {
  if (__builtin_expect(p != nullptr, 1) && __builtin_expect(MaybeHeadered(p), 0)) return FreeSlow(p);
  return g_free_next(p);
}

// free where they do not. A block the filter does not hold is neither
// sampled nor from the bootstrap arena (pinned there before the mode
// leaves kStarting), and goes straight to the real free (NULL too, unless
// its byte is taken). Off mode's filter holds only the pins (and, in a fork
// child of a sampled process, the parent's samples, which FreeSlow just
// frees).
void FilterFree(void* p) {
  if (__builtin_expect(!cgoheap::agent::g_sampled.MaybeContainsFast(reinterpret_cast<uint64_t>(p)), 1)) {
    return g_real.free(p);
  }
  FreeSlow(p);
}

// The filter until the next allocator is known, and for good unless it is
// glibc's: set once, at start-up, before the mode leaves kStarting.
constinit FreeFn g_free_impl = FilterFree;

// Whether every function the shim passes calls on to is glibc's (the
// object that defines __libc_malloc): only then may free read before a
// block. dladdr allocates nothing.
bool NextIsGlibc() {
  if constexpr (sizeof(void*) != 8) return false;  // 32-bit glibc aligns to 8: bit 3 is size
  void* libc_malloc = dlsym(RTLD_NEXT, "__libc_malloc");
  Dl_info libc;
  if (libc_malloc == nullptr || dladdr(libc_malloc, &libc) == 0) return false;
  const RealAllocator& r = g_real;
  const void* fns[] = {reinterpret_cast<void*>(r.malloc),        reinterpret_cast<void*>(r.calloc),
                       reinterpret_cast<void*>(r.realloc),       reinterpret_cast<void*>(r.reallocarray),
                       reinterpret_cast<void*>(r.free),          reinterpret_cast<void*>(r.posix_memalign),
                       reinterpret_cast<void*>(r.aligned_alloc), reinterpret_cast<void*>(r.memalign),
                       reinterpret_cast<void*>(r.valloc),        reinterpret_cast<void*>(r.pvalloc),
                       reinterpret_cast<void*>(r.malloc_usable_size)};
  for (const void* fn : fns) {
    Dl_info info;
    if (dladdr(fn, &info) == 0 || info.dli_fbase != libc.dli_fbase) return false;
  }
  return true;
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
  // CGOHEAP_HEADERS=0: the filter even before glibc (for the tests, and a
  // way out should a glibc ever break the header test's premise).
  const char* headers = cgoheap::agent::Env("CGOHEAP_HEADERS");
  if ((headers == nullptr || strcmp(headers, "0") != 0) && NextIsGlibc()) {
    g_headers = true;
    g_free_impl = HeaderFree;
  }
  cgoheap::agent::g_mode_listener = OnModeEntered;
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
// thread's countdown, free the header bit and then the target the mode
// set (or the filter); each sends every call of exact mode and kStarting
// to the slow paths, which read it.
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

// HeaderFree or FilterFree: one indirect jump.
__attribute__((visibility("default"))) void free(void* p) { g_free_impl(p); }

}  // extern "C"

namespace {

// realloc and reallocarray: api names the entry point the program called.
// Inlined into each, so that the frame the unwind starts from is theirs.
// Whether the new block is recorded is decided first: a block with a
// header needs it from the start.
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
  if (Headered(old)) {
    // glibc's realloc of the whole block, header and all: it grows or
    // shrinks in place where it can, and a block it moves takes the header
    // along (the offset stays; realloc promises no more alignment than
    // malloc's). The block keeps its header whether recorded or not.
    const size_t offset = HeaderOffset(old);
    void* base = HeaderBase(old);
    if (size == 0) {  // as glibc's realloc: frees, returns NULL
      Freeing(old);
      g_real.free(base);
      return nullptr;
    }
    if (size > static_cast<size_t>(PTRDIFF_MAX) - offset) {
      errno = ENOMEM;
      return nullptr;  // the block stays as it was recorded
    }
    const bool record = WillRecord(size);
    Freeing(old);
    void* moved = g_real.realloc(base, size + offset);
    if (moved == nullptr) {
      Allocated(api, old, UsableSize(old));  // still live: recorded again (see below)
      return nullptr;
    }
    void* p = static_cast<char*>(moved) + offset;
    if (record) Recorded(api, p, size);
    return p;
  }
  const bool record = WillRecord(size);
  const bool header = record && WithHeader(cgoheap::agent::CurrentMode());
  if (old == nullptr) {
    void* p = header ? HeaderedMalloc(size) : g_real.realloc(nullptr, size);
    if (record) Recorded(api, p, size);
    return p;
  }
  // A size no allocator can give (glibc refuses anything over PTRDIFF_MAX
  // before touching the block): the block stays as it was recorded.
  if (size > static_cast<size_t>(PTRDIFF_MAX)) return g_real.realloc(old, size);
  if (header && size != 0) {
    // A block without a header cannot gain one in place: moved by hand.
    // If the new block cannot be had, the old one is left as it was.
    void* p = HeaderedMalloc(size);
    if (p == nullptr) return nullptr;
    size_t had = g_real.malloc_usable_size(old);
    memcpy(p, old, had < size ? had : size);
    Freeing(old);
    g_real.free(old);
    Recorded(api, p, size);
    return p;
  }
  Freeing(old);
  void* p = g_real.realloc(old, size);
  if (p != nullptr) {
    if (record) Recorded(api, p, size);
  } else if (size != 0) {
    // Failed: the old block is still live. Its original stack is gone, so it
    // is re-recorded here with the stack of the failed realloc.
    Allocated(api, old, g_real.malloc_usable_size(old));
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
  const bool record = WillRecord(size);
  if (record && WithHeader(cgoheap::agent::CurrentMode())) {
    if (align % sizeof(void*) != 0 || !PowerOfTwo(align)) return EINVAL;  // as glibc
    void* p = HeaderedAligned(align, size);
    if (p == nullptr) return ENOMEM;
    *out = p;
    Recorded(Api::kPosixMemalign, p, size);
    return 0;
  }
  int rc = g_real.posix_memalign(out, align, size);
  if (rc == 0 && record) Recorded(Api::kPosixMemalign, *out, size);
  return rc;
}

}  // extern "C"

namespace {

// The rest of the memalign family: whether the block is recorded decided
// first; a recorded block gets a header where blocks carry them, if its
// alignment is a power of two. A block of any other alignment (glibc
// rounds it up, or refuses it) is left to the real allocator and not
// recorded: without a header its free could not be told from the rest.
// Inlined into each entry point (the frame the unwind starts from).
// bytes: what a block with a header takes (pvalloc rounds size up).
template <typename Real>
__attribute__((always_inline)) inline void* Aligned(Api api, size_t align, size_t size, size_t bytes,
                                                    Real real) {
  cgoheap::agent::CheckNotInHook();
  EnsureReal();
  bool record = WillRecord(size);
  if (record && WithHeader(cgoheap::agent::CurrentMode())) {
    if (PowerOfTwo(align)) {
      void* p = HeaderedAligned(align, bytes);
      Recorded(api, p, size);
      return p;
    }
    record = false;
  }
  void* p = real();
  if (record) Recorded(api, p, size);
  return p;
}

size_t PageSize() { return static_cast<size_t>(getpagesize()); }

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* aligned_alloc(size_t align, size_t size) {
  return Aligned(Api::kAlignedAlloc, align, size, size, [&] { return g_real.aligned_alloc(align, size); });
}

__attribute__((visibility("default"))) void* memalign(size_t align, size_t size) {
  return Aligned(Api::kMemalign, align, size, size, [&] { return g_real.memalign(align, size); });
}

__attribute__((visibility("default"))) void* valloc(size_t size) {
  return Aligned(Api::kValloc, PageSize(), size, size, [&] { return g_real.valloc(size); });
}

// With a header: the size rounded up to whole pages, as glibc's pvalloc
// does (the record keeps the size asked for).
__attribute__((visibility("default"))) void* pvalloc(size_t size) {
  const size_t page = PageSize();
  if (size > SIZE_MAX - (page - 1)) {
    errno = ENOMEM;
    return nullptr;
  }
  const size_t rounded = (size + page - 1) & ~(page - 1);
  return Aligned(Api::kPvalloc, page, size, rounded, [&] { return g_real.pvalloc(size); });
}

__attribute__((visibility("default"))) size_t malloc_usable_size(void* p) {
  if (p == nullptr) return 0;
  if (FromBootstrap(p)) return 0;
  EnsureReal();
  return UsableSize(p);
}

}  // extern "C"
