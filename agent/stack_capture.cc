// Stack capture across the cgo boundary.
//
// A cgo call runs C on the thread's g0 stack, entered through
// runtime.asmcgocall. So: DWARF-unwind the C frames (the cached CFI
// unwinder, libunwind where it cannot) until the return address lies inside
// asmcgocall; there, asmcgocall's own frame on the g0 stack holds the
// goroutine's g and the depth of the goroutine's SP below g->stack.hi, at
// offsets that differ by Go release and are learnt from asmcgocall's code at
// start-up (agent/go_crossing.h). Go keeps frame pointers on amd64, so the
// rest is a frame-pointer walk of the goroutine stack. The boundary is
// recognised by address (learnt from .symtab or .gopclntab), never by name:
// libunwind names that frame `main` in a `-s -w` binary.
//
// The walk must never fault inside someone else's process. g->stack is g's
// first field, [lo, hi). Every frame pointer is checked against those bounds
// (aligned, strictly increasing) before it is read; g itself is read with
// process_vm_readv the first time a thread sees it, so a corrupt value costs
// an error, not a crash. On a system stack (the Go runtime's own calls into
// C) there are no bounds to check against, so every word is read with
// process_vm_readv.
//
// Callbacks. When C calls back into Go (an exported Go function), the Go
// frames of the callback end at runtime.cgocallback, whose frame record is
// on the C stack: the saved RBP in cgocallbackg's frame points at it. From
// there the walk goes on through crosscall2 (its frame learnt from its code,
// agent/go_crossing.h) into the C frames that called back, CFI-unwound with
// every read checked (the C stack's bounds are not known here), to the next
// asmcgocall, and so on: a stack crosses as many times as the program did,
// and ends at the goroutine's start or, on a thread C created, at
// start_thread.
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>

#include "agent/agent.h"
#include "agent/cfi_unwinder.h"
#include "agent/go_crossing.h"

namespace cgoheap::agent {

// The latest capture was cut short: it reached asmcgocall but found no Go
// frame above it, or met C code without unwind information.
constinit __attribute__((tls_model("initial-exec"))) thread_local bool t_capture_cut_short = false;

namespace {

// The last g this thread read safely. g structs are never unmapped (the
// runtime recycles them), so once readable a g stays readable; its stack
// bounds are not cached, because a growing goroutine stack is copied.
__attribute__((tls_model("initial-exec"))) thread_local uint64_t t_known_g = 0;

bool SafeRead(uint64_t addr, void* out, size_t len) { return CheckedRead(addr, out, len); }


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

uint64_t Word(uint64_t addr) { return *reinterpret_cast<const uint64_t*>(addr); }

}  // namespace
}  // namespace cgoheap::agent

namespace cgoheap::agent {
namespace {

// The chain cache. A thread allocates from a handful of call paths, each
// time with the same return addresses at the same stack addresses (a cgo
// call always starts at the same depth of the thread's g0 stack, and a
// goroutine that calls C again and again from one place does so at the same
// depth of its own stack). So each thread keeps its last few stacks: the
// return addresses, and every word the walk read that decided where it went
// next, with its address. For the C part: each return address slot, and
// each saved RBP that a later CFA was computed from. For the Go part: the
// goroutine's g and depth in asmcgocall's frame, g->stack, and every word
// of the frame-pointer walk.
//
// A capture that starts at the same return address and SP (and RBP, if that
// fed a CFA) as a cached chain re-reads those words, in the order the walk
// read them, instead of walking: if every one is unchanged, every step
// computes what it computed before (a CFI rule depends only on the pc, a CFA
// only on the pc, SP and RBP; a frame-pointer step only on the words it
// reads and the stack bounds, themselves checked; by induction over the
// chain), so the stack is the same. Each address is safe to read because
// every word it was computed from matched: the C stack is this thread's
// own, and a goroutine stack is read only after its g and bounds matched
// (a goroutine in a cgo call cannot have its stack moved or freed, and g
// structs are never unmapped).
//
// Where the C part matches and the Go part does not (the same C function
// called from another Go caller, or by another goroutine), the C frames
// are used and the Go frames are walked afresh; the stack is then cached
// as a chain of its own. Stacks that cross back into C (callbacks) or run
// on a system stack cache their C part only.
constexpr int kChainFrames = 64;                      // C and Go frames
constexpr int kChainChecks = 2 * kChainFrames + 8;
constexpr unsigned kChains = 8;

struct Chain {
  struct Check {
    uint64_t addr, value;  // value: ~the word read
  };
  // Words that may hold a pointer to a heap block (RBP is a general register
  // in code built without frame pointers; a stack word read by the walk can
  // be anything) are kept complemented, as ring_writer.h's RecentAlloc keeps
  // addresses: cgoheap's exit scan must not find them in the agent's memory.
  uint64_t bp0;       // ~RBP at the start; part of the key when need_bp0
  bool need_bp0;      // the starting RBP fed a CFA (or the Go walk)
  bool go;            // the C part ends in asmcgocall: Go frames follow
  bool go_known;      // ... and they are cached too: pcs[c_frames..n), checks[c_checks..nchecks)
  bool cut_short;     // the unwind stopped at code without CFI
  uint32_t epoch;     // g_boundary_epoch as the walk began (cut_short: a Go runtime found
                      // since may let the walk go on)
  uint32_t c_frames;  // pcs[0..c_frames): the C frames
  uint32_t n;         // all frames (go_known)
  uint32_t c_checks;  // checks[0..c_checks): the C part's
  uint32_t nchecks;
  int max;            // the capture's frame limit when the Go part was walked
  uint64_t end_sp;    // asmcgocall's SP
  uint64_t bp_slot;   // where the final RBP was restored from; 0: the starting RBP
  uint64_t pcs[kChainFrames];
  Check checks[kChainChecks];  // in the order the walk read them
};

// The keys apart from the chains: a lookup reads two cache lines.
struct ChainKey {
  uint64_t pc0, sp0;  // the first return address and the SP above it; pc0 0: empty
};

__attribute__((tls_model("initial-exec"))) thread_local ChainKey t_chain_keys[kChains];
__attribute__((tls_model("initial-exec"))) thread_local Chain t_chains[kChains];
__attribute__((tls_model("initial-exec"))) thread_local unsigned t_chain_next = 0;
__attribute__((tls_model("initial-exec"))) thread_local uint64_t t_chain_hits = 0;

// Whether the first n words the chain's walk read still hold what they held,
// read in that order (each address is safe once the words before it match).
inline bool Unchanged(const Chain& c, uint32_t n) {
  uint32_t i = 0;
  while (i < n && ~Word(c.checks[i].addr) == c.checks[i].value) ++i;
  return i == n;
}

// The C frames of a cached chain that starts at start and crosses into Go,
// where its C part matches and the rest does not (WholeStackFromCache,
// below, serves whole stacks): their number, asmcgocall's frame regs in
// *at, the chain in *slot. -1 if no chain's C part matches.
int CPartFromCache(const UnwindRegs& start, uint64_t* pcs, int max, UnwindRegs* at,
                   unsigned* slot) {
  for (unsigned k = 0; k < kChains; ++k) {
    if (t_chain_keys[k].pc0 != start.pc || t_chain_keys[k].sp0 != start.sp) continue;
    const Chain& c = t_chains[k];
    if (!c.go || (c.need_bp0 && c.bp0 != ~start.bp) || static_cast<int>(c.c_frames) > max) {
      continue;
    }
    if (!Unchanged(c, c.c_checks)) continue;
    for (uint32_t j = 0; j < c.c_frames; ++j) pcs[j] = c.pcs[j];
    uint64_t bp = c.bp_slot != 0 ? Word(c.bp_slot) : start.bp;
    *at = UnwindRegs{c.pcs[c.c_frames - 1], c.end_sp, bp};
    *slot = k;
    ++t_chain_hits;
    return static_cast<int>(c.c_frames);
  }
  return -1;
}

// Records a chain into the cache while it is walked. The chain it writes
// has no key until its C part is complete, so a recording given up leaves
// nothing behind.
class ChainRecorder {
 public:
  // A capture from regs, nothing cached.
  void Start(const UnwindRegs& regs) {
    Open();
    c_->pcs[0] = regs.pc;
    c_->bp0 = ~regs.bp;
    c_->need_bp0 = false;
    c_->nchecks = 0;
    c_->bp_slot = 0;
    key_ = ChainKey{regs.pc, regs.sp};
    stage_ = Stage::kC;
  }
  // A capture whose C part matched the chain in slot and whose Go part did
  // not: the Go part is recorded after a copy of that C part (another Go
  // caller of the same C code gets a chain of its own), or in place where
  // the chain has no Go part cached. start: the capture's first frame; at:
  // asmcgocall's frame, where the Go walk starts.
  void StartAfter(unsigned slot, const UnwindRegs& start, const UnwindRegs& at) {
    const Chain& from = t_chains[slot];
    const ChainKey key = t_chain_keys[slot];
    if (from.go_known) {
      Open();
      c_->need_bp0 = from.need_bp0;
      c_->cut_short = from.cut_short;
      c_->c_frames = from.c_frames;
      c_->c_checks = from.c_checks;
      c_->end_sp = from.end_sp;
      c_->bp_slot = from.bp_slot;
      for (uint32_t i = 0; i < from.c_frames; ++i) c_->pcs[i] = from.pcs[i];
      for (uint32_t i = 0; i < from.c_checks; ++i) c_->checks[i] = from.checks[i];
    } else {
      slot_ = slot;
      c_ = &t_chains[slot];
    }
    c_->bp0 = ~start.bp;  // the same where need_bp0
    c_->go = true;
    c_->go_known = false;
    c_->nchecks = c_->c_checks;
    key_ = key;
    t_chain_keys[slot_] = key_;  // its C part is complete
    BeginGo(at.bp);
  }
  void Stop() { stage_ = Stage::kOff; }
  // After a step to regs (the caller's pc, SP, RBP), which read trace.
  void Step(const StepTrace& trace, const UnwindRegs& regs) {
    if (stage_ != Stage::kC) return;
    if (trace.cfa_from_rbp) {
      // The CFA came from the RBP before this step: from the start, or from
      // the slot an earlier step restored it from.
      if (c_->bp_slot == 0) {
        c_->need_bp0 = true;
      } else if (!rbp_checked_) {
        Add(c_->bp_slot, rbp_value_);
        rbp_checked_ = true;
      }
    }
    Add(trace.ra_slot, regs.pc);
    if (trace.rbp_slot != 0) {
      c_->bp_slot = trace.rbp_slot;
      rbp_value_ = regs.bp;
      rbp_checked_ = false;
    }
  }
  void Frame(int index, uint64_t pc) {
    if (index >= kChainFrames) stage_ = Stage::kOff;
    if (stage_ == Stage::kC) c_->pcs[index] = pc;
  }
  // The C part ended with n frames: at asmcgocall (go; regs its frame's),
  // or at the stack's end. It is cached from now on.
  void EndC(int n, bool go, const UnwindRegs& regs, bool cut_short = false) {
    if (stage_ != Stage::kC || n > kChainFrames) {
      stage_ = Stage::kOff;
      return;
    }
    c_->c_frames = static_cast<uint32_t>(n);
    c_->c_checks = c_->nchecks;
    c_->go = go;
    c_->go_known = false;
    c_->cut_short = cut_short;
    c_->end_sp = regs.sp;
    t_chain_keys[slot_] = key_;
    if (go) {
      BeginGo(regs.bp);
    } else {
      stage_ = Stage::kOff;
    }
  }
  // A word the Go walk read (unchecked: its address is one the checks
  // before it make safe).
  void Read(uint64_t addr, uint64_t value) {
    if (stage_ == Stage::kGo) Add(addr, value);
  }
  // The Go walk ended cleanly (pcs[0..n), the whole stack, walked with
  // limit max): the chain now covers it.
  void EndGo(const uint64_t* pcs, int n, int max) {
    if (stage_ != Stage::kGo || n > kChainFrames) {
      Stop();
      return;
    }
    for (int i = static_cast<int>(c_->c_frames); i < n; ++i) c_->pcs[i] = pcs[i];
    c_->n = static_cast<uint32_t>(n);
    c_->max = max;
    c_->go_known = true;
    stage_ = Stage::kOff;
  }
  // The Go walk did not end cleanly: the C part alone stays cached.
  void AbandonGo() {
    if (stage_ == Stage::kGo) c_->nchecks = c_->c_checks;
    stage_ = Stage::kOff;
  }

 private:
  enum class Stage : uint8_t { kOff, kC, kGo };
  void Open() {
    slot_ = t_chain_next++ % kChains;
    t_chain_keys[slot_].pc0 = 0;
    c_ = &t_chains[slot_];
    // Before the walk: a Go runtime published during it makes the chain old.
    c_->epoch = g_boundary_epoch.load(std::memory_order_relaxed);
    rbp_checked_ = false;
  }
  // The frame-pointer walk starts from the RBP the C code preserved, unless
  // asmcgocall opens a frame of its own: that RBP is then part of the key.
  void BeginGo(uint64_t bp) {
    stage_ = Stage::kGo;
    if (Crossing().pushes_frame) return;
    if (c_->bp_slot != 0) {
      Add(c_->bp_slot, bp);
    } else {
      c_->need_bp0 = true;
    }
  }
  void Add(uint64_t addr, uint64_t value) {
    if (c_->nchecks == kChainChecks) {
      if (stage_ == Stage::kGo) {
        AbandonGo();
      } else {
        stage_ = Stage::kOff;
      }
      return;
    }
    c_->checks[c_->nchecks++] = {addr, ~value};
  }

  Chain* c_ = nullptr;
  unsigned slot_ = 0;
  ChainKey key_{};
  Stage stage_ = Stage::kOff;
  uint64_t rbp_value_ = 0;
  bool rbp_checked_ = false;
};

// Walks frame pointers from the SP asmcgocall saved at its entry (entry_sp)
// up a stack [lo, hi). bp: RBP as the C code preserved it. checked: every
// word is read with process_vm_readv (bounds unknown). *callback: where the
// walk reached runtime.cgocallback, its frame record on the C stack (0 if
// it did not). rec: notes every word read (unchecked walks only).
int WalkFramePointers(uint64_t entry_sp, uint64_t bp, uint64_t lo, uint64_t hi, bool checked,
                      uint64_t* pcs, int max, uint64_t* callback, ChainRecorder* rec) {
  auto read = [checked, rec](uint64_t addr, uint64_t* v) {
    if (!checked) {
      *v = Word(addr);
      rec->Read(addr, *v);
      return true;
    }
    return SafeRead(addr, v, sizeof *v);
  };
  if ((entry_sp & 7) != 0 || entry_sp < lo || entry_sp + 16 > hi) return 0;
  const uint64_t cb_lo = Boundary().cgocallback_lo, cb_hi = Boundary().cgocallback_hi;
  int n = 0;
  uint64_t prev = entry_sp;
  if (Crossing().pushes_frame) {
    // entry_sp is asmcgocall's own frame record. The restored RBP is not
    // used: it was saved on the g0 stack before any callback, and the
    // goroutine stack may have been moved since.
    bp = entry_sp;
  } else {
    // entry_sp holds asmcgocall's return address; RBP is its caller's frame.
    uint64_t ret;
    if (!read(entry_sp, &ret)) return 0;
    if (n < max) pcs[n++] = ret;
    prev = entry_sp + 8;
  }
  while (n < max) {
    if ((bp & 7) != 0 || bp < prev || bp < lo || bp + 16 > hi) break;
    uint64_t next, ret;
    if (!read(bp, &next) || !read(bp + 8, &ret) || ret == 0) break;
    pcs[n++] = ret;
    prev = bp + 16;
    if (ret >= cb_lo && ret < cb_hi && (next < lo || next >= hi)) {
      *callback = next;  // cgocallback's frame, on the stack of the C code that called back
      break;
    }
    bp = next;
  }
  return n;
}

// sp, bp: registers of the asmcgocall frame (the state right after the C
// function it called returned to site).
int WalkGoFrames(const GoCrossing::Site& site, uint64_t sp, uint64_t bp, uint64_t* pcs, int max,
                 uint64_t* callback, ChainRecorder* rec) {
  int n = 0;
  if (site.kind == GoCrossing::Kind::kGoroutine) {
    uint64_t depth = Word(sp + site.depth_off);  // sp is on this thread's own g0 stack
    uint64_t g = Word(sp + site.g_off);
    rec->Read(sp + site.depth_off, depth);
    rec->Read(sp + site.g_off, g);
    uint64_t lo, hi;
    if (GoroutineStack(g, &lo, &hi) && depth != 0 && depth <= hi - lo) {
      rec->Read(g, lo);
      rec->Read(g + 8, hi);
      n = WalkFramePointers(hi - depth, bp, lo, hi, /*checked=*/false, pcs, max, callback, rec);
    }
  } else if (site.kind == GoCrossing::Kind::kSystemStack) {
    // Already on a system stack (g0 or gsignal): the frames above are on
    // this very stack, whose bounds are not known here.
    rec->AbandonGo();
    uint64_t entry_sp = Word(sp + site.sp_off);
    uint64_t ignored = 0;
    n = WalkFramePointers(entry_sp, bp, sp, sp + (uint64_t{1} << 26), /*checked=*/true, pcs, max,
                          &ignored, rec);
  }
  if (n == 0) t_capture_cut_short = true;
  return n;
}

// The Go frames above asmcgocall, whose return site is pc; 0 (and a failed
// crossing) where asmcgocall's layout is not known. *callback as for
// WalkFramePointers.
int CrossIntoGo(uint64_t pc, uint64_t sp, uint64_t bp, uint64_t* pcs, int max,
                uint64_t* callback, ChainRecorder* rec) {
  *callback = 0;
  const GoCrossing::Site* site = Crossing().Find(pc);
  if (site == nullptr) {
    t_capture_cut_short = true;
    return 0;
  }
  return WalkGoFrames(*site, sp, bp, pcs, max, callback, rec);
}

// From cgocallback's frame record (at record, on the C stack above inner_sp,
// the SP of the asmcgocall the walk came through) to the C code that called
// back: records crosscall2's frame and its caller's, and sets regs to the
// caller's frame. False where the frames are not as crosscall2 makes them.
bool CrossBackIntoC(uint64_t record, uint64_t inner_sp, UnwindRegs* regs, uint64_t* pcs, int* n,
                    int max) {
  const CallbackCrossing& x = Boundary().callback;
  uint64_t rec[2];  // saved RBP, return address into crosscall2
  if (!x.known() || (record & 7) != 0 || record <= inner_sp ||
      record - inner_sp > (uint64_t{1} << 26) || !SafeRead(record, rec, sizeof rec) ||
      rec[1] != x.return_pc || *n + 2 > max) {
    return false;
  }
  uint64_t cfa = record + 16 + x.cfa_off, ret, rbp;
  if (!SafeRead(cfa - 8, &ret, 8) || !SafeRead(cfa - x.rbp_off, &rbp, 8) || ret == 0) return false;
  pcs[(*n)++] = rec[1];
  pcs[(*n)++] = ret;
  *regs = UnwindRegs{ret, cfa, rbp};
  return true;
}

}  // namespace
}  // namespace cgoheap::agent

namespace cgoheap::agent {
namespace {

// The ranges are read as PublishBoundary (agent.cc) writes them: a Go
// library loaded after start-up is published while other threads capture.
// Acquire: the crossing's layout, written before, is then seen.
bool InAsmcgocall(uint64_t pc) {
  GoBoundary& b = g_boundary;
  return pc >= __atomic_load_n(&b.asmcgocall_lo, __ATOMIC_ACQUIRE) &&
         pc < __atomic_load_n(&b.asmcgocall_hi, __ATOMIC_RELAXED);
}

bool InGoText(uint64_t pc) {
  GoBoundary& b = g_boundary;
  return pc >= __atomic_load_n(&b.text_lo, __ATOMIC_ACQUIRE) &&
         pc < __atomic_load_n(&b.text_hi, __ATOMIC_RELAXED);
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
        uint64_t callback;  // libunwind's path crosses once
        ChainRecorder none;
        n += CrossIntoGo(ip, sp, bp, pcs + n, max - n, &callback, &none);
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

// At asmcgocall (regs: its frame, the C function it called just returned):
// the Go frames above it, and, where they end in a callback from C, back
// into the C frames that called back. Returns the new frame count; *more:
// regs now describe a C frame to go on unwinding from. rec: recording the
// Go part of a chain, which is cached where the stack ends in Go.
int CrossAt(UnwindRegs* regs, uint64_t* pcs, int n, int max, bool* more, ChainRecorder* rec) {
  uint64_t callback = 0;
  int go = CrossIntoGo(regs->pc, regs->sp, regs->bp, pcs + n, max - n, &callback, rec);
  n += go;
  if (go != 0 && callback == 0) {
    rec->EndGo(pcs, n, max);
  } else {
    rec->AbandonGo();
  }
  *more = callback != 0 && CrossBackIntoC(callback, regs->sp, regs, pcs, &n, max);
  return n;
}

// Unwinds from regs (pcs[0..n) already recorded), crossing into Go at each
// asmcgocall and back into C at each callback.
int Unwind(UnwindRegs regs, bool first_is_return_address, ChainRecorder* chain, uint64_t* pcs,
           int n, int max) {
  bool checked = false;  // after a callback: the C stack's bounds are not known
  for (int steps = 0; n < max && steps < 2 * max + 16; ++steps) {
    StepTrace trace;
    StepResult r = CfiStep(&regs, /*is_return_address=*/steps > 0 || first_is_return_address,
                           &trace, checked);
    if (r == StepResult::kEnd || r == StepResult::kNoInfo) {
      // kEnd: the outermost frame (_start, clone). kNoInfo: code without
      // CFI, whose callers are then unknown; except Go's own assembly,
      // which calls C directly only where the runtime starts a thread or
      // itself (rt0_go -> x_cgo_init): the stack ends there.
      bool cut = r == StepResult::kNoInfo && !InGoText(regs.pc);
      if (cut) t_capture_cut_short = true;
      chain->EndC(n, /*go=*/false, regs, cut);
      return n;
    }
    if (r != StepResult::kOk) {
      if (!checked) return LibunwindCapture(pcs, max);
      t_capture_cut_short = true;  // the C frames that called back could not be followed
      return n;
    }
    chain->Step(trace, regs);
    if (InAgent(regs.pc)) {  // the hook's own frames
      chain->Stop();
      continue;
    }
    chain->Frame(n, regs.pc);
    pcs[n++] = regs.pc;
    if (InAsmcgocall(regs.pc)) {
      // regs are asmcgocall's: SP just after the C function returned, RBP as
      // the C code preserved it.
      chain->EndC(n, /*go=*/true, regs);
      bool more;
      n = CrossAt(&regs, pcs, n, max, &more, chain);
      if (!more) return n;
      checked = true;
      first_is_return_address = true;
    }
  }
  return n;
}

}  // namespace
}  // namespace cgoheap::agent

namespace cgoheap::agent {
namespace {

// The common case, kept lean: the whole stack from a chain that starts at
// the caller of the shim's frame (pc, sp, bp) and matches in full (the
// frames, in the chain, in *frames), or -1. A chain's start is never in the
// agent or in asmcgocall (no chain is recorded from there), so a match
// needs no other check.
inline int WholeStackFromCache(uint64_t pc, uint64_t sp, uint64_t bp, int max,
                               const uint64_t** frames) {
  for (unsigned k = 0; k < kChains; ++k) {
    if (t_chain_keys[k].pc0 != pc || t_chain_keys[k].sp0 != sp) continue;
    const Chain& c = t_chains[k];
    if ((c.need_bp0 && c.bp0 != ~bp) || (c.go ? !c.go_known || c.max != max
                                              : static_cast<int>(c.c_frames) > max)) {
      continue;
    }
    if (!Unchanged(c, c.nchecks)) continue;
    if (c.cut_short) {
      // Cut short before a Go runtime loaded since was known: walked afresh.
      if (c.epoch != g_boundary_epoch.load(std::memory_order_relaxed)) continue;
      t_capture_cut_short = true;
    }
    ++t_chain_hits;
    *frames = c.pcs;
    return static_cast<int>(c.go ? c.n : c.c_frames);
  }
  return -1;
}

// Everything else: a chain whose C part alone matches, or none; stacks
// that cross back into C; captures from the current frame.
__attribute__((noinline)) int CaptureSlow(uint64_t* pcs, int max, const void* frame) {
  UnwindRegs regs;
  int n = 0;
  // The chain being unwound, for the cache (only for captures from a hook's
  // frame, whose start is the program's own call site).
  ChainRecorder chain;
  if (frame == nullptr) {
    asm volatile(
        "mov %%rsp, %0\n\t"
        "mov %%rbp, %1\n\t"
        "lea 0(%%rip), %2"
        : "=r"(regs.sp), "=r"(regs.bp), "=r"(regs.pc));
    return Unwind(regs, /*first_is_return_address=*/false, &chain, pcs, n, max);
  }
  // The shim's frame (as in cgoheap_capture_stack): the caller's own frame
  // is the first one recorded.
  const auto* fp = static_cast<const uint64_t*>(frame);
  regs = UnwindRegs{fp[1], reinterpret_cast<uint64_t>(fp + 2), fp[0]};
  if (!InAgent(regs.pc)) {
    pcs[n++] = regs.pc;
    bool crossing = InAsmcgocall(regs.pc);
    if (!crossing) {
      UnwindRegs at;
      unsigned slot;
      if (int cached = CPartFromCache(regs, pcs, max, &at, &slot); cached >= 0) {
        n = cached;  // the C part: the Go part is walked, and cached after it
        chain.StartAfter(slot, regs, at);
        regs = at;
        crossing = true;
      } else {
        chain.Start(regs);
      }
    }
    if (crossing) {
      bool more;
      n = CrossAt(&regs, pcs, n, max, &more, &chain);
      if (!more) return n;
      ChainRecorder none;
      return Unwind(regs, /*first_is_return_address=*/true, &none, pcs, n, max);
    }
  }
  return Unwind(regs, /*first_is_return_address=*/true, &chain, pcs, n, max);
}

}  // namespace
}  // namespace cgoheap::agent

int cgoheap::agent::CaptureStack(uint64_t* pcs, int max, const void* frame,
                                 const uint64_t** frames) {
  t_capture_cut_short = false;
  if (frame != nullptr) {
    // The shim's frame (the agent keeps frame pointers): [fp] is the
    // caller's RBP, [fp+8] the return address into the caller, fp+16 the
    // caller's SP.
    const auto* fp = static_cast<const uint64_t*>(frame);
    int n = WholeStackFromCache(fp[1], reinterpret_cast<uint64_t>(fp + 2), fp[0], max, frames);
    if (n >= 0) return n;
  }
  *frames = pcs;
  return CaptureSlow(pcs, max, frame);
}

extern "C" __attribute__((noinline)) int cgoheap_capture_stack(uint64_t* pcs, int max,
                                                              const void* frame) {
  using namespace cgoheap::agent;
  if (frame == nullptr) {  // from this very frame: its caller is the first frame recorded
    t_capture_cut_short = false;
    UnwindRegs regs;
    asm volatile(
        "mov %%rsp, %0\n\t"
        "mov %%rbp, %1\n\t"
        "lea 0(%%rip), %2"
        : "=r"(regs.sp), "=r"(regs.bp), "=r"(regs.pc));
    ChainRecorder none;
    return Unwind(regs, /*first_is_return_address=*/false, &none, pcs, 0, max);
  }
  const uint64_t* frames;
  int n = CaptureStack(pcs, max, frame, &frames);
  if (frames != pcs) {
    for (int i = 0; i < n; ++i) pcs[i] = frames[i];
  }
  return n;
}

extern "C" bool cgoheap_last_capture_cut_short() {
  return cgoheap::agent::t_capture_cut_short;
}

// For tests: captures this thread served from its chain cache (whole, or
// their C part).
extern "C" uint64_t cgoheap_chain_cache_hits() { return cgoheap::agent::t_chain_hits; }

// For benchmarks: the same capture through libunwind only.
extern "C" int cgoheap_capture_stack_libunwind(uint64_t* pcs, int max) {
  return cgoheap::agent::LibunwindCapture(pcs, max);
}
