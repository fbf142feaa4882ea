// The agent's C core. The preload shim (preload.cc) and tests drive the same
// functions (heaptrack's libheaptrack.h / heaptrack_preload.cpp split).
//
// Environment read at start-up:
//   CGOHEAP_RING_DIR        directory where this process creates its ring file;
//                           unset: the agent stays dormant (pure pass-through)
//   CGOHEAP_ROOT_PID        only this pid is tracked, unless
//   CGOHEAP_TRACE_CHILDREN  is 1: children (fork, exec) get rings of their own;
//                           2: only the children that are Go programs do
//   CGOHEAP_ROOT_IS_DRIVER  1: the root pid is not tracked (`go run`, `go test`:
//                           the go command builds the program and runs it)
//   CGOHEAP_NOTE_UNTRACED   1: a process not tracked (by CGOHEAP_ROOT_PID) leaves an
//                           empty DIR/PID.untraced, and a child not tracked for
//                           not being a Go program DIR/PID.notgo holding its
//                           name, both counted by `cgoheap run`
//   CGOHEAP_SAMPLE_BYTES    0 (default): every allocation; N: Poisson sampling
//   CGOHEAP_RING_MB         size of each thread's lane of the ring in MiB (default 2;
//                           the file is sparse: a lane takes memory once used)
//   CGOHEAP_RING_LANES      lanes in the ring (default 64); threads beyond that share one
//   CGOHEAP_CLOCK           "counter": order events with a shared counter, not the TSC
//   CGOHEAP_FULL_WAIT_MS    exact mode: how long a writer waits for a full ring
//                           to drain before dropping (default 2000)
#pragma once

#include <atomic>

#include <cstddef>
#include <cstdint>

#include "agent/go_crossing.h"

extern "C" {

// Records an allocation the fast path chose (every one in exact mode, a
// sampled one in sampled mode), after the real allocator returned ptr.
// frame: the allocator entry point's frame pointer (__builtin_frame_address
// in the shim): the unwind starts at its caller; nullptr: from here.
void cgoheap_on_alloc(int api, void* ptr, size_t size, const void* frame);
// Records a free before the real free: every free in exact mode; in sampled
// mode a free whose address may be sampled (it checks and returns if not).
void cgoheap_on_free(void* ptr);
// True when the agent is recording for this process.
bool cgoheap_active();
// Captures the calling thread's stack (C frames, then Go frames across the cgo
// boundary). Returns the number of return addresses written. frame: as for
// cgoheap_on_alloc.
int cgoheap_capture_stack(uint64_t* pcs, int max, const void* frame = nullptr);
// True when this thread's latest capture was cut short (counted as an
// unwind failure): it reached runtime.asmcgocall but could not recover the
// Go frames above it, or met C code without unwind information.
bool cgoheap_last_capture_cut_short();

}  // extern "C"

namespace cgoheap::agent {
// cgoheap_capture_stack without the copy where it can: *frames is set to
// the captured return addresses, in pcs or in the thread's stack cache
// (valid until the thread's next capture).
int CaptureStack(uint64_t* pcs, int max, const void* frame, const uint64_t** frames);

// Per-thread recursion guard: allocations made while a hook is recording
// (by libunwind, by the ring code) pass straight through.
struct HookGuard {
  HookGuard();
  ~HookGuard();
  bool entered() const { return entered_; }

 private:
  bool entered_;
};

// True while this thread is inside a hook's recording path.
bool InHook();

// The allocation guard (tcmalloc's AllocationGuard): a build with
// CGOHEAP_ALLOC_GUARD aborts when the allocator is entered from inside a
// hook's recording path, which must never allocate. Called at the top of
// every allocator entry point of the preload shim.
#ifdef CGOHEAP_ALLOC_GUARD
inline constexpr bool kAllocGuard = true;
#else
inline constexpr bool kAllocGuard = false;
#endif
[[noreturn]] void AllocatedInsideHook();
inline void CheckNotInHook() {
  if constexpr (kAllocGuard) {
    if (InHook()) AllocatedInsideHook();
  }
}

// What the hooks do, decided at start-up (and again in a fork child).
// kStarting: the preload shim has not yet resolved the real allocator (its
// entry points take their slow paths); every other mode has it, so their
// fast paths call it without a test.
// Set with release order after what the mode relies on (the real
// allocator, the ring); read with acquire order (a plain load on x86-64).
//
// The fast paths of malloc, calloc and free read no mode (preload.cc): the
// mode is also written into what they read. malloc and calloc take the
// slow path when the thread's sampling countdown (sampler.h) crosses zero:
// in off mode the slow path sets it to kNeverSample, in exact mode and
// kStarting it stays at zero (every call slow). free, where blocks carry
// the shim's headers (glibc next), takes the slow path for a block with
// one and otherwise jumps where the mode says (g_mode_listener: the real
// free in sampled and off modes, the slow path in exact mode and
// kStarting); elsewhere it takes the slow path when the sampled set's
// filter says "maybe": flooded in exact mode and kStarting (every free
// slow), the counts of the sampled blocks and the bootstrap pins in
// sampled and off modes. EnterMode keeps all of them in step with the
// mode.
enum class Mode : uint32_t { kOff = 0, kExact = 1, kSampled = 2, kStarting = 3 };
extern std::atomic<Mode> g_mode;
inline Mode CurrentMode() { return g_mode.load(std::memory_order_acquire); }
// From kStarting (other threads' countdowns are then zero: their every
// call took the slow path), or where no other thread can be in
// the allocator (a fork child): other threads' countdowns are not reset.
void EnterMode(Mode m);
// Told of each mode EnterMode enters, before the mode is stored (the
// preload shim: free's target follows the mode, preload.cc). Set once,
// before the first EnterMode; null in the tests' static agent.
using ModeListener = void (*)(Mode);
extern ModeListener g_mode_listener;
extern uint64_t g_sample_bytes;
class SampledSet;
extern SampledSet g_sampled;  // agent/sampled_set.h

// Boundaries learnt once from the binary that holds the Go runtime: the
// executable, or a Go library it links (FindGoLibraryBoundary).
struct GoBoundary {
  uint64_t asmcgocall_lo = 0, asmcgocall_hi = 0;
  uint64_t text_lo = 0, text_hi = 0;  // Go text (runtime bias applied)
  GoCrossing crossing;                // asmcgocall's frame (runtime addresses)
  uint64_t cgocallback_lo = 0, cgocallback_hi = 0;
  CallbackCrossing callback;          // crosscall2's frame (runtime addresses)
};
// Set at start-up (and in a fork child), or once later when a Go library
// is loaded with dlopen (PublishBoundary, agent.cc: the ranges last; the
// capture reads them with acquire), read on every capture: inline.
extern GoBoundary g_boundary;
// Raised when a Go runtime is published after start-up: stacks cached as
// cut short before it are walked again.
extern std::atomic<uint32_t> g_boundary_epoch;
inline const GoBoundary& Boundary() { return g_boundary; }
inline const GoCrossing& Crossing() { return g_boundary.crossing; }
// The calling thread's latest capture was cut short (see
// cgoheap_last_capture_cut_short).
extern constinit __attribute__((tls_model("initial-exec"))) thread_local bool t_capture_cut_short;

// The value of an environment variable, or null: as getenv, which a
// program may define itself (bash does).
const char* Env(const char* name);
// Start-up and fork entry points (agent.cc).
void Initialize();
// Finds asmcgocall and Go's text in exe (loaded at bias) and decodes
// asmcgocall's frame layout. False when exe has no asmcgocall (no Go, or no
// cgo); out->crossing.known() is false when its layout is not understood.
// toolchain, if given: set to whether exe is one of Go's own commands (the
// go command, vet, cgo: build info's main package under "cmd/").
bool FindGoBoundary(const char* exe, uint64_t bias, GoBoundary* out, bool* toolchain = nullptr);
// The same for the first loaded shared library that holds a Go runtime (a Go
// library built with -buildmode=c-shared, in a program that is not Go).
// Each library is looked at once: a later call looks only at those loaded
// since. Not thread-safe: at start-up, or under RefreshMaps's flag.
bool FindGoLibraryBoundary(GoBoundary* out);
void AgentRange(uint64_t* lo, uint64_t* hi);

}  // namespace cgoheap::agent
