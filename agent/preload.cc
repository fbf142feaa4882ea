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

__attribute__((cold, noinline)) void ResolveReal() {
  g_resolving = true;
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

// The fast path every allocation takes: one load of the mode, and in sampled
// mode a thread-local countdown. Everything else is out of line. Always
// inlined, so that __builtin_frame_address(0) is the allocator entry point's
// own frame and the unwind can start at the program's code.
__attribute__((always_inline)) inline void Allocated(Api api, void* p, size_t size) {
  using cgoheap::agent::Mode;
  Mode mode = cgoheap::agent::g_mode;
  if (mode == Mode::kSampled) {
    if (__builtin_expect(!cgoheap::agent::SampleAllocation(size, cgoheap::agent::g_sample_bytes), 1)) {
      return;
    }
  } else if (mode != Mode::kExact) {
    return;
  }
  if (p != nullptr) cgoheap_on_alloc(static_cast<int>(api), p, size, __builtin_frame_address(0));
}

// Before the real free: in sampled mode a one-byte filter load decides.
inline void Freeing(void* p) {
  using cgoheap::agent::Mode;
  Mode mode = cgoheap::agent::g_mode;
  if (mode == Mode::kSampled) {
    if (__builtin_expect(!cgoheap::agent::g_sampled.MaybeContains(reinterpret_cast<uint64_t>(p)), 1)) {
      return;
    }
  } else if (mode != Mode::kExact) {
    return;
  }
  cgoheap_on_free(p);
}

__attribute__((constructor(101))) void AgentStart() {
  EnsureReal();
  cgoheap::agent::Initialize();
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* malloc(size_t size) {
  cgoheap::agent::CheckNotInHook();
  if (__builtin_expect(g_real.malloc == nullptr, 0)) {
    EnsureReal();
    if (g_real.malloc == nullptr) return BootstrapAlloc(size);
  }
  void* p = g_real.malloc(size);
  Allocated(Api::kMalloc, p, size);
  return p;
}

__attribute__((visibility("default"))) void* calloc(size_t n, size_t size) {
  cgoheap::agent::CheckNotInHook();
  if (__builtin_expect(g_real.calloc == nullptr, 0)) {
    if (g_resolving) {
      size_t total;
      if (__builtin_mul_overflow(n, size, &total)) return nullptr;
      return BootstrapAlloc(total);
    }
    EnsureReal();
  }
  void* p = g_real.calloc(n, size);
  Allocated(Api::kCalloc, p, n * size);
  return p;
}

__attribute__((visibility("default"))) void free(void* p) {
  if (p == nullptr || FromBootstrap(p)) return;
  if (__builtin_expect(g_real.free == nullptr, 0)) EnsureReal();
  Freeing(p);
  g_real.free(p);
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
