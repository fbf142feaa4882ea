// Reader for Go's .gopclntab: function names, files and lines for every Go PC.
//
// Go's runtime needs this table to run, so it survives `-ldflags=-s -w`, which
// removes .symtab and DWARF (docs/ARCHITECTURE.md fact 6). It is the only correct
// source for Go lines here: libdw maps Go PCs to a wrong file. Formats of
// Go 1.18-1.19 (magic 0xfffffff0) and 1.20+ (0xfffffff1, still 1.26's) are
// understood; layout from Go's runtime/symtab.go, runtime/symtabinl.go and
// debug/gosym. Go 1.26 no longer stores the text start in the header: the
// caller passes it (symbolize/go_module.h finds it).
//
// Allocation-free and bounds-checked (the agent calls it at start-up).
//
//   GoPclntab tab;
//   if (tab.Init(sec.data, sec.size, text_addr)) {
//     GoPclntab::Func f;
//     if (tab.FindFunc(pc, &f)) {
//       std::string_view file; int32_t line;
//       tab.Line(f, pc, &file, &line);
//     }
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cgoheap {

// Thread-safe after Init (const methods only read the table).
class GoPclntab {
 public:
  struct Func {
    uint64_t entry = 0;  // link-time address
    uint64_t end = 0;    // next function's entry
    uint32_t func_off = 0;
  };

  // data/size: the section bytes. text_addr: address of the .text section
  // (used when the header's textStart is zero, as it is before relocation).
  bool Init(const uint8_t* data, size_t size, uint64_t text_addr);

  uint64_t text_start() const { return text_start_; }
  uint64_t text_end() const;
  uint32_t num_funcs() const { return nfunc_; }

  bool FuncAt(uint32_t i, Func* f) const;
  // Binary search of the function table. False outside Go text, and for
  // addresses past the end of the function's own pc tables (C code that the
  // linker placed between Go functions).
  bool FindFunc(uint64_t pc, Func* f) const;
  std::string_view FuncName(const Func& f) const;
  // File and line of pc inside f (pc as looked up: return address minus one).
  bool Line(const Func& f, uint64_t pc, std::string_view* file, int32_t* line) const;

  // The function data that funcdata offsets are relative to (go:func.*, from
  // symbolize/go_module.h), for the inline trees. Without it, Frames does
  // not expand inlined calls.
  void SetFuncData(const uint8_t* gofunc, size_t size) {
    gofunc_ = gofunc;
    gofunc_size_ = size;
  }
  struct Frame {
    std::string_view function, file;
    int32_t line = 0;
  };
  // The frames at pc inside f, innermost first, with inlined calls expanded
  // as runtime.CallersFrames expands them: each inlined function with its own
  // line, then the function it was inlined into with the line of the call.
  // Returns how many were written (at most max; 0 if pc is not covered).
  int Frames(const Func& f, uint64_t pc, Frame* out, int max) const;
  // True when gofunc (size bytes) is where funcdata offsets start: the
  // inline trees of the first functions that have one read as inline trees
  // (names in the name table, call sites inside their functions).
  bool FuncDataLooksRight(const uint8_t* gofunc, size_t size) const;
  // Finds a function by exact name; linear, for start-up use.
  bool FindByName(std::string_view name, Func* f) const;

 private:
  bool FuncField(uint32_t func_off, int index, uint32_t* out) const;
  // Value of the pc-value table at table_off for pc; false if not covered.
  bool PcValue(const Func& f, uint32_t table_off, uint64_t pc, int32_t* out) const;
  std::string_view CStr(uint64_t off) const;
  // runtime._func's pcdata[i] and funcdata[i] slots.
  bool PcData(const Func& f, uint32_t i, uint64_t pc, int32_t* out) const;
  const uint8_t* FuncData(const Func& f, uint32_t i, size_t* avail) const;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool go120_ = false;
  uint8_t min_lc_ = 1;
  uint32_t nfunc_ = 0;
  uint64_t text_start_ = 0;
  uint64_t funcname_off_ = 0;
  uint64_t cu_off_ = 0;
  uint64_t filetab_off_ = 0;
  uint64_t pctab_off_ = 0;
  uint64_t pcln_off_ = 0;
  const uint8_t* gofunc_ = nullptr;
  size_t gofunc_size_ = 0;
};

}  // namespace cgoheap
