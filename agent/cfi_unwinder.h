// A cached DWARF CFI unwinder for x86-64, for use inside allocator hooks.
//
// libunwind's unw_step costs about 1.2 us per allocation here (docs/ARCHITECTURE.md
// fact 9): it re-derives every frame's rule from .eh_frame and validates memory
// with system calls. What a frame needs is small and depends only on its
// return address: where the CFA is (RSP or RBP plus an offset) and where the
// caller's RBP was saved. This unwinder learns that rule once per address
// (evaluating the FDE's CFA program from .eh_frame_hdr's search table) and
// keeps it in a lock-free table, so a warm step is one hash probe and two
// loads.
//
// Allocation-free, lock-free on hits; a miss calls dl_iterate_phdr (which
// takes the loader's lock briefly, as libgcc's and libunwind's unwinders do).
// Rules it cannot express (DWARF expressions, registers saved in registers)
// are reported as kUnsupported so the caller can fall back to libunwind.
//
//   UnwindRegs r = CurrentRegs();            // from inside the capturing function
//   while (CfiStep(&r, first) == StepResult::kOk) { ...r.pc... }
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cgoheap::agent {

struct UnwindRegs {
  uint64_t pc;
  uint64_t sp;
  uint64_t bp;
};

enum class StepResult {
  kOk,           // regs now describe the caller
  kEnd,          // the outermost frame (return address undefined): done
  kNoInfo,       // no FDE covers pc (Go code, JIT, stripped asm)
  kUnsupported,  // an FDE exists but uses rules this unwinder does not evaluate
  kBadStack,     // the computed CFA is not above the current SP
};

// Where a step read what it restored, for callers that replay a chain of
// steps later (stack_capture.cc's chain cache): the addresses depend only on
// the pc and the SP the step started from, unless the CFA was computed from
// RBP (cfa_from_rbp).
struct StepTrace {
  uint64_t ra_slot = 0;   // address the return address was read from
  uint64_t rbp_slot = 0;  // address RBP was restored from; 0: RBP unchanged
  bool cfa_from_rbp = false;
};

// Steps from the frame in regs to its caller. is_return_address: pc is a
// return address (every frame but the first), so the rule for pc-1 applies.
// checked: read the stack with process_vm_readv (a failed read ends the
// unwind with kBadStack), for stacks whose bounds are not known.
StepResult CfiStep(UnwindRegs* regs, bool is_return_address, StepTrace* trace = nullptr,
                   bool checked = false);

// Reads len bytes at addr of this process without faulting: false if any of
// them is not mapped readable. A system call: for slow paths only.
bool CheckedRead(uint64_t addr, void* out, size_t len);

// dlopens + dlcloses of the process as of the latest rule learnt (0: none
// learnt yet). Code never seen before is learnt on its first unwind, so a
// change here is how the agent hears that a new object is mapped.
// Inline: the agent checks it after every recorded allocation.
extern std::atomic<uint64_t> g_cfi_objects_generation;
inline uint64_t CfiObjectsGeneration() {
  return g_cfi_objects_generation.load(std::memory_order_relaxed);
}

// Cache statistics, for benchmarks and tests (hits are not counted: a shared
// counter on the hot path would cost more than the step).
struct CfiCacheStats {
  uint64_t misses, entries;
  uint64_t last_miss;  // the address looked up by the latest miss
};
CfiCacheStats CfiStats();

}  // namespace cgoheap::agent
