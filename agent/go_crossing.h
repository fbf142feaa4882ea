// How runtime.asmcgocall lays out its frame, learnt from its own machine code.
//
// A cgo call runs C on the thread's g0 stack, entered from the goroutine
// stack through runtime.asmcgocall (runtime/asm_amd64.s). To walk on from
// the C frames into the Go frames that made the call, the agent needs what
// asmcgocall saved on the g0 stack before it called C: the goroutine's g and
// the depth of the goroutine's SP below g->stack.hi. Where it keeps them
// differs by Go release (docs/ARCHITECTURE.md fact 3):
//
//   Go 1.19-1.21  SUBQ $64, SP   g at 48(SP), depth at 40(SP)   CALL AX
//   Go 1.22+      SUBQ $16, SP   g at 8(SP),  depth at 0(SP)    CALL asmcgocall_landingpad
//   Go 1.21+      asmcgocall itself starts with PUSHQ BP; MOVQ SP, BP
//
// Guessing from a version number would break on the next release that moves
// them, so the layout is read from the instructions asmcgocall runs right
// after the C function returns, which reload exactly these slots:
//
//   MOVQ g_off(SP), DI         ; 48 8B 7C 24 disp8 | 48 8B 3C 24
//   MOVQ stack_hi(DI), SI      ; 48 8B 77 disp8
//   SUBQ depth_off(SP), SI     ; 48 2B 74 24 disp8 | 48 2B 34 24
//
// and, on the path taken when asmcgocall is already on a system stack (the Go
// runtime's own calls into C, with no goroutine to return to):
//
//   MOVQ sp_off(SP), SI        ; 48 8B 74 24 disp8 | 48 8B 34 24
//   MOVQ SI, SP                ; 48 89 F4
//
// each right after a CALL (E8 rel32, or FF D0: CALL AX), or after the one
// instruction that loads RCX for get_tls in a -buildmode=pie binary
// (MOVQ $-8, CX). A binary whose
// asmcgocall matches neither is not walked into Go at all: the agent marks
// the process (ring header flag) and records the C frames alone.
//
//   GoCrossing c;
//   if (DecodeAsmcgocall(code, size, entry, &c)) { ...c.Find(return_pc)... }
#pragma once

#include <cstddef>
#include <cstdint>

namespace cgoheap::agent {

struct GoCrossing {
  enum class Kind : uint8_t { kNone = 0, kGoroutine, kSystemStack };
  // A place C returns to inside asmcgocall, and what the frame holds there.
  struct Site {
    uint64_t return_pc = 0;
    Kind kind = Kind::kNone;
    uint8_t g_off = 0;      // kGoroutine: g at SP+g_off
    uint8_t depth_off = 0;  // kGoroutine: stack.hi - SP at entry, at SP+depth_off
    uint8_t sp_off = 0;     // kSystemStack: the SP at entry, at SP+sp_off
  };
  static constexpr int kMaxSites = 4;
  Site sites[kMaxSites];
  int nsites = 0;
  // asmcgocall opens a frame of its own (PUSHQ BP; MOVQ SP, BP): the SP it
  // saves points at that frame record. Without it, the SP it saves points at
  // its return address and RBP is still its caller's frame pointer.
  bool pushes_frame = false;

  bool known() const { return nsites > 0; }
  const Site* Find(uint64_t pc) const {
    for (int i = 0; i < nsites; ++i) {
      if (sites[i].return_pc == pc) return &sites[i];
    }
    return nullptr;
  }
};

// The way back from a callback: C calls an exported Go function through
// crosscall2 (runtime/cgo/asm_amd64.s), which calls runtime.cgocallback on
// the C stack. crosscall2 is Go assembly, so it has no DWARF CFI in
// .eh_frame; its frame is learnt from its prologue instead:
//   Go 1.19-1.21  SUBQ $0x30, SP; MOVQ BP, 0x28(SP); LEAQ 0x28(SP), BP; ...
//   Go 1.22+      PUSHQ BP; MOVQ SP, BP; SUBQ $0x30, SP; MOVQ BP, 0x28(SP); ...
// then register saves and SUBQ $0x18, SP before CALL runtime.cgocallback.
struct CallbackCrossing {
  uint64_t return_pc = 0;  // in crosscall2, after its CALL runtime.cgocallback
  uint32_t cfa_off = 0;    // crosscall2's CFA = SP at return_pc + cfa_off
  uint32_t rbp_off = 0;    // its caller's RBP is saved at CFA - rbp_off
  bool known() const { return return_pc != 0; }
};

// Decodes crosscall2's code up to its call of runtime.cgocallback, which
// lies in [callback_lo, callback_hi). Instructions other than the stack
// adjustments and register saves it is made of stop the decoding (false).
bool DecodeCrosscall2(const uint8_t* code, size_t size, uint64_t entry, uint64_t callback_lo,
                      uint64_t callback_hi, CallbackCrossing* out);

// Decodes asmcgocall's code (size bytes at code, linked or loaded at entry).
// True when at least one goroutine return site was recognised. Reads only
// [code, code + size); allocation-free.
bool DecodeAsmcgocall(const uint8_t* code, size_t size, uint64_t entry, GoCrossing* out);

}  // namespace cgoheap::agent
