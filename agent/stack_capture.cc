// Stack capture across the cgo boundary.
//
// A cgo call runs C on the thread's g0 stack, entered through
// runtime.asmcgocall, which leaves RBP untouched (ARCHITECTURE.md fact 2).
// So: DWARF-unwind the C frames with libunwind until the return address lies
// inside asmcgocall; the RBP recovered for that frame is the Go caller's frame
// pointer on the goroutine stack, and Go always keeps frame pointers on amd64,
// so the rest is a frame-pointer walk. The boundary is recognised by address
// (learnt from .symtab or .gopclntab at start-up), never by name: libunwind
// names that frame `main` in a `-s -w` binary.
//
// The walk must never fault inside someone else's process. asmcgocall saves
// the goroutine's g at 48(SP) and the depth below stack.hi at 40(SP) of its
// g0 frame (runtime/asm_amd64.s). g->stack is g's first field, [lo, hi).
// Every frame pointer is checked against those bounds (aligned, strictly
// increasing) before it is read; g itself is read with process_vm_readv the
// first time a thread sees it, so a corrupt value costs an error, not a crash.
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>

#include "agent/agent.h"
#include "agent/cfi_unwinder.h"

namespace cgoheap::agent {
namespace {

// The last g this thread read safely. g structs are never unmapped (the
// runtime recycles them), so once readable a g stays readable; its stack
// bounds are not cached, because a growing goroutine stack is copied.
__attribute__((tls_model("initial-exec"))) thread_local uint64_t t_known_g = 0;

bool SafeRead(uint64_t addr, void* out, size_t len) {
  iovec local{out, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == static_cast<ssize_t>(len);
}

bool GoroutineStack(uint64_t g, uint64_t* lo, uint64_t* hi) {
  if (g == 0 || (g & 7) != 0) return false;
  uint64_t bounds[2];
  if (g == t_known_g) {
    const auto* stack = reinterpret_cast<const uint64_t*>(g);
    bounds[0] = stack[0];
    bounds[1] = stack[1];
  } else if (!SafeRead(g, bounds, sizeof bounds)) {
    return false;
  }
  if (bounds[0] >= bounds[1] || bounds[1] - bounds[0] > (uint64_t{1} << 31)) return false;
  t_known_g = g;
  *lo = bounds[0];
  *hi = bounds[1];
  return true;
}

// sp, bp: registers of the asmcgocall frame (the state right after the C
// function it called returned).
int WalkGoFrames(uint64_t sp, uint64_t bp, uint64_t* pcs, int max) {
  const uint64_t* frame = reinterpret_cast<const uint64_t*>(sp);
  uint64_t depth = frame[5];  // 40(SP); sp is on this thread's own g0 stack
  uint64_t g = frame[6];      // 48(SP)
  uint64_t lo, hi;
  if (!GoroutineStack(g, &lo, &hi) || depth == 0 || depth > hi - lo) return 0;
  uint64_t old_sp = hi - depth;  // SP at asmcgocall's entry: return into cgocall
  int n = 0;
  if ((old_sp & 7) == 0 && old_sp + 8 <= hi && n < max) {
    pcs[n++] = *reinterpret_cast<const uint64_t*>(old_sp);
  }
  uint64_t prev = old_sp;
  while (n < max) {
    if ((bp & 7) != 0 || bp < prev || bp < lo || bp + 16 > hi) break;
    const uint64_t* f = reinterpret_cast<const uint64_t*>(bp);
    uint64_t ret = f[1];
    if (ret == 0) break;
    pcs[n++] = ret;
    prev = bp + 16;
    bp = f[0];
  }
  return n;
}

}  // namespace
}  // namespace cgoheap::agent

namespace cgoheap::agent {
namespace {

bool InAsmcgocall(uint64_t pc) {
  const GoBoundary& b = Boundary();
  return pc >= b.asmcgocall_lo && pc < b.asmcgocall_hi;
}

bool InAgent(uint64_t pc) {
  uint64_t lo, hi;
  AgentRange(&lo, &hi);
  return pc >= lo && pc < hi;
}

// The slow, general path: libunwind, for frames whose CFI the cached
// unwinder does not evaluate (DWARF expressions, signal frames).
__attribute__((noinline)) int LibunwindCapture(uint64_t* pcs, int max) {
  unw_context_t ctx;
  unw_cursor_t cursor;
  if (unw_getcontext(&ctx) != 0 || unw_init_local(&cursor, &ctx) != 0) return 0;
  int n = 0;
  while (n < max && unw_step(&cursor) > 0) {
    unw_word_t ip = 0;
    if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
    if (InAgent(ip)) continue;
    pcs[n++] = ip;
    if (InAsmcgocall(ip)) {
      unw_word_t sp = 0, bp = 0;
      if (unw_get_reg(&cursor, UNW_REG_SP, &sp) == 0 &&
          unw_get_reg(&cursor, UNW_X86_64_RBP, &bp) == 0) {
        n += WalkGoFrames(sp, bp, pcs + n, max - n);
      }
      break;
    }
  }
  return n;
}

}  // namespace
}  // namespace cgoheap::agent

namespace cgoheap::agent {
namespace {

// The chain cache. A thread allocates from a handful of call paths, each
// time with the same return addresses at the same stack addresses (a cgo
// call always starts at the same depth of the thread's g0 stack). So each
// thread keeps the C part of its last few stacks: the return addresses, and
// every word the unwind read that decided where it went next (each return
// address slot, and each saved RBP that a later CFA was computed from), with
// its address. A capture that starts at the same return address and SP (and
// RBP, if that fed a CFA) as a cached chain re-reads those words instead of
// unwinding: if every one is unchanged, every step computes what it computed
// before (a rule depends only on the pc, a CFA only on the pc, SP and RBP; by
// induction over the chain), so the chain is the same. The RBP handed to the
// Go walk is read afresh, and the Go frames are walked afresh.
constexpr int kChainFrames = 32;
constexpr unsigned kChains = 8;

struct Chain {
  struct Check {
    uint64_t addr, value;
  };
  uint64_t pc0, sp0;  // key: the first return address and the SP above it
  uint64_t bp0;       // also part of the key when need_bp0
  bool need_bp0;      // the starting RBP fed a CFA
  bool go;            // the last frame is in asmcgocall: the Go walk follows
  uint32_t n;         // pcs[0..n): the C frames
  uint32_t nchecks;
  uint64_t end_sp;    // asmcgocall's SP
  uint64_t bp_slot;   // where the final RBP was restored from; 0: the starting RBP
  uint64_t pcs[kChainFrames];
  Check checks[2 * kChainFrames];  // in the order the unwind read them
};

__attribute__((tls_model("initial-exec"))) thread_local Chain t_chains[kChains];
__attribute__((tls_model("initial-exec"))) thread_local unsigned t_chain_next = 0;
__attribute__((tls_model("initial-exec"))) thread_local uint64_t t_chain_hits = 0;

int FromChainCache(const UnwindRegs& start, uint64_t* pcs, int max) {
  for (const Chain& c : t_chains) {
    if (c.pc0 != start.pc || c.sp0 != start.sp || (c.need_bp0 && c.bp0 != start.bp) ||
        static_cast<int>(c.n) > max) {
      continue;
    }
    // In order: each address was computed from the words checked before it.
    uint32_t i = 0;
    while (i < c.nchecks &&
           *reinterpret_cast<const uint64_t*>(c.checks[i].addr) == c.checks[i].value) {
      ++i;
    }
    if (i < c.nchecks) continue;
    for (i = 0; i < c.n; ++i) pcs[i] = c.pcs[i];
    int n = static_cast<int>(c.n);
    if (c.go) {
      uint64_t bp = c.bp_slot != 0 ? *reinterpret_cast<const uint64_t*>(c.bp_slot) : start.bp;
      n += WalkGoFrames(c.end_sp, bp, pcs + n, max - n);
    }
    ++t_chain_hits;
    return n;
  }
  return -1;
}

// Records a chain while it is unwound.
class ChainRecorder {
 public:
  void Start(const UnwindRegs& regs) {
    c_.pc0 = c_.pcs[0] = regs.pc;
    c_.sp0 = regs.sp;
    c_.bp0 = regs.bp;
    c_.need_bp0 = false;
    c_.nchecks = 0;
    c_.bp_slot = 0;
    active_ = true;
  }
  void Stop() { active_ = false; }
  // After a step to regs (the caller's pc, SP, RBP), which read trace.
  void Step(const StepTrace& trace, const UnwindRegs& regs) {
    if (!active_) return;
    if (trace.cfa_from_rbp) {
      // The CFA came from the RBP before this step: from the start, or from
      // the slot an earlier step restored it from.
      if (c_.bp_slot == 0) {
        c_.need_bp0 = true;
      } else if (!rbp_checked_) {
        Add(c_.bp_slot, rbp_value_);
        rbp_checked_ = true;
      }
    }
    Add(trace.ra_slot, regs.pc);
    if (trace.rbp_slot != 0) {
      c_.bp_slot = trace.rbp_slot;
      rbp_value_ = regs.bp;
      rbp_checked_ = false;
    }
  }
  void Frame(int index, uint64_t pc) {
    if (index >= kChainFrames) active_ = false;
    if (active_) c_.pcs[index] = pc;
  }
  void Remember(int n, bool go, uint64_t end_sp) {
    if (!active_ || n > kChainFrames) return;
    c_.n = static_cast<uint32_t>(n);
    c_.go = go;
    c_.end_sp = end_sp;
    t_chains[t_chain_next++ % kChains] = c_;
  }

 private:
  void Add(uint64_t addr, uint64_t value) {
    if (c_.nchecks == 2 * kChainFrames) {
      active_ = false;
      return;
    }
    c_.checks[c_.nchecks++] = {addr, value};
  }

  Chain c_;
  bool active_ = false;
  uint64_t rbp_value_ = 0;
  bool rbp_checked_ = false;
};

}  // namespace
}  // namespace cgoheap::agent

extern "C" __attribute__((noinline)) int cgoheap_capture_stack(uint64_t* pcs, int max,
                                                              const void* frame) {
  using namespace cgoheap::agent;
  UnwindRegs regs;
  bool first_is_return_address = true;
  int n = 0;
  // The chain being unwound, for the cache (only for captures from a hook's
  // frame, whose start is the program's own call site).
  ChainRecorder chain;
  if (frame != nullptr) {
    // The shim's frame (the agent keeps frame pointers): [fp] is the caller's
    // RBP, [fp+8] the return address into the caller, fp+16 the caller's SP.
    // The caller's own frame is then the first one recorded.
    const auto* fp = static_cast<const uint64_t*>(frame);
    regs = UnwindRegs{fp[1], reinterpret_cast<uint64_t>(fp + 2), fp[0]};
    if (!InAgent(regs.pc)) {
      pcs[n++] = regs.pc;
      if (InAsmcgocall(regs.pc)) return n + WalkGoFrames(regs.sp, regs.bp, pcs + n, max - n);
      if (int cached = FromChainCache(regs, pcs, max); cached >= 0) return cached;
      chain.Start(regs);
    }
  } else {
    asm volatile(
        "mov %%rsp, %0\n\t"
        "mov %%rbp, %1\n\t"
        "lea 0(%%rip), %2"
        : "=r"(regs.sp), "=r"(regs.bp), "=r"(regs.pc));
    first_is_return_address = false;
  }
  for (int steps = 0; n < max && steps < max + 16; ++steps) {
    StepTrace trace;
    StepResult r = CfiStep(&regs, /*is_return_address=*/steps > 0 || first_is_return_address,
                           &trace);
    if (r == StepResult::kEnd || r == StepResult::kNoInfo) {
      chain.Remember(n, /*go=*/false, regs.sp);
      return n;
    }
    if (r != StepResult::kOk) return LibunwindCapture(pcs, max);
    chain.Step(trace, regs);
    if (InAgent(regs.pc)) {  // the hook's own frames
      chain.Stop();
      continue;
    }
    chain.Frame(n, regs.pc);
    pcs[n++] = regs.pc;
    if (InAsmcgocall(regs.pc)) {
      // regs are asmcgocall's: SP just after the C function returned, RBP as
      // the C code preserved it.
      chain.Remember(n, /*go=*/true, regs.sp);
      n += WalkGoFrames(regs.sp, regs.bp, pcs + n, max - n);
      return n;
    }
  }
  return n;
}

// For tests: captures this thread served from its chain cache.
extern "C" uint64_t cgoheap_chain_cache_hits() { return cgoheap::agent::t_chain_hits; }

// For benchmarks: the same capture through libunwind only.
extern "C" int cgoheap_capture_stack_libunwind(uint64_t* pcs, int max) {
  return cgoheap::agent::LibunwindCapture(pcs, max);
}
