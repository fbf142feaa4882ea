// What a Go executable says about itself: its build info (the Go release
// that built it, its main module) and its moduledata (where its text starts,
// where its function data lives), read from the ELF file alone.
//
// Why moduledata: .gopclntab's header gives its own tables, but since Go
// 1.26 not the text start any more (pcHeader.textStart is 0), and never the
// base that funcdata offsets are relative to (moduledata.gofunc, the
// go:func.* symbol, which holds the inline trees). In an external link the
// .text section starts with C code, so its address is not runtime.text. The
// symbol table has both, but `-ldflags=-s -w` removes it; moduledata is
// always there: the runtime needs it. It is found as Go's own runtime finds
// it, through its first word, which points to .gopclntab's pcHeader
// (firstmoduledata, in .go.module since Go 1.26, in .noptrdata before).
// Layout (runtime/symtab.go, type moduledata), in 8-byte words:
//   0 pcHeader   1-18 six slices   19 findfunctab   20 minpc   21 maxpc
//   22 text      23 etext          24-31 noptrdata .. enoptrbss
//   Go 1.18-1.19 (pclntab magic 0xfffffff0): 32 end .. 37 rodata, 38 gofunc
//   Go 1.20+     (magic 0xfffffff1): 32-33 covctrs, 34 end .. 39 rodata, 40 gofunc
// Each value read is checked against the sections it must point into.
//
// Allocation-free and bounds-checked (the agent reads it at start-up).
//
//   ElfImage elf; elf.Open(path);
//   GoModule m;
//   if (ReadGoModule(elf, &m)) { ...m.text_start, m.version, m.main_module... }
#pragma once

#include <cstddef>
#include <cstdint>

#include "symbolize/elf_image.h"

namespace cgoheap {

struct GoModule {
  // .gopclntab (link address and bytes).
  uint64_t pclntab_addr = 0;
  const uint8_t* pclntab = nullptr;
  uint64_t pclntab_size = 0;
  uint64_t text_start = 0;  // runtime.text: what .gopclntab's offsets are from
  // go:func.* (funcdata offsets are from here), as bytes of the file up to
  // the end of its section; null when not found.
  const uint8_t* gofunc = nullptr;
  uint64_t gofunc_size = 0;
  // From .go.buildinfo: "go1.22.12", and the main module's path ("" in a
  // GOPATH build or `go run x.go`: "command-line-arguments" has no module).
  char version[48] = {};
  char main_module[256] = {};
  char main_package[256] = {};  // the "path" line: the main package's import path
};

// True when elf has .gopclntab and its text start could be established.
bool ReadGoModule(const ElfImage& elf, GoModule* out);

}  // namespace cgoheap
