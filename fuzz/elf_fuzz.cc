// ELF and .gopclntab parsing (symbolize/): the agent parses its own
// executable at start-up and the forwarder parses every object a target maps,
// so a malformed file must be rejected or read within its bounds.
//
// Input: an ELF file (every query of ElfImage, then the Go module and its
// .gopclntab if it has one), so any executable is a seed; or, when it does
// not start with the ELF magic, a bare .gopclntab after its text address (8
// bytes). Tables are looked up at every function's entry and at pcs taken
// from the input's last 128 bytes.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "symbolize/elf_image.h"
#include "symbolize/go_module.h"
#include "symbolize/gopclntab.h"
#include "symbolize/symbol_index.h"

namespace {

using namespace cgoheap;

void Exercise(const GoPclntab& tab, fuzz::FuzzInput& in) {
  FUZZ_CHECK(tab.num_funcs() == 0 || tab.text_end() >= tab.text_start(), "text ends before it starts");
  GoPclntab::Frame frames[16];
  auto look = [&](const GoPclntab::Func& f, uint64_t pc) {
    std::string_view file;
    int32_t line = 0;
    (void)tab.FuncName(f);
    (void)tab.Line(f, pc, &file, &line);
    int n = tab.Frames(f, pc, frames, 16);
    FUZZ_CHECK(n >= 0 && n <= 16, "Frames wrote more than it was given room for");
  };
  const uint32_t n = tab.num_funcs() < 256 ? tab.num_funcs() : 256;
  GoPclntab::Func f;
  for (uint32_t i = 0; i < n; ++i) {
    if (tab.FuncAt(i, &f)) look(f, f.entry);
  }
  for (int i = 0; i < 16; ++i) {
    uint64_t pc = tab.text_start() + in.Next<uint32_t>() % 0x100000;
    if (tab.FindFunc(pc, &f)) {
      FUZZ_CHECK(pc >= f.entry && pc < f.end, "FindFunc gave a function that does not hold pc");
      look(f, pc);
    }
  }
  (void)tab.FindByName("main.main", &f);
}

void Elf(const std::string& file, fuzz::FuzzInput& in) {
  ElfImage elf;
  if (!elf.OpenMemory(reinterpret_cast<const uint8_t*>(file.data()), file.size())) return;
  ElfSection sec;
  for (const char* name : {".text", ".gopclntab", ".go.buildinfo", ".note.gnu.build-id",
                           ".symtab", ".dynsym", ".eh_frame"}) {
    if (elf.FindSection(name, &sec) && sec.data != nullptr) {
      const uint8_t* base = reinterpret_cast<const uint8_t*>(file.data());
      FUZZ_CHECK(sec.data >= base && sec.size <= file.size() && sec.data - base <= static_cast<ptrdiff_t>(file.size() - sec.size),
                 "a section lies outside the file");
    }
  }
  uint64_t value = 0, size = 0, vaddr = 0, offset = 0, filesz = 0;
  (void)elf.FindSymbol("main", &value, &size);
  SymbolIndex symbols = SymbolIndex::FromElf(elf);
  for (int i = 0; i < 8; ++i) {
    uint64_t addr = i == 0 ? value : in.Next<uint64_t>();
    uint64_t start = 0;
    (void)elf.SectionAt(addr, &sec);
    std::string_view name = symbols.Find(addr, &start);
    FUZZ_CHECK(name.empty() || start <= addr, "a symbol that starts after the address covers it");
  }
  char id[64];
  FUZZ_CHECK(elf.BuildId(id, sizeof id) < sizeof id, "BuildId overflowed its buffer");
  (void)elf.ExecSegment(&vaddr, &offset, &filesz);
  (void)elf.IsSharedObject();
  GoModule m;
  if (ReadGoModule(elf, &m) && m.pclntab != nullptr) {
    GoPclntab tab;
    if (tab.Init(m.pclntab, m.pclntab_size, m.text_start)) {
      if (m.gofunc != nullptr && tab.FuncDataLooksRight(m.gofunc, m.gofunc_size)) {
        tab.SetFuncData(m.gofunc, m.gofunc_size);
      }
      Exercise(tab, in);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Addresses to look up come from the input's last 128 bytes.
  const size_t tail = size > 128 ? size - 128 : 0;
  fuzz::FuzzInput lookups(data + tail, size - tail);
  if (size >= 4 && std::memcmp(data, "\x7f" "ELF", 4) == 0) {
    Elf(std::string(reinterpret_cast<const char*>(data), size), lookups);
    return 0;
  }
  fuzz::FuzzInput in(data, size);
  const uint64_t text = in.Next<uint64_t>();
  // The table in a buffer of its own size, so reading past it is seen.
  std::string rest = in.Rest();
  std::vector<uint8_t> table(rest.begin(), rest.end());
  GoPclntab tab;
  if (tab.Init(table.data(), table.size(), text)) Exercise(tab, lookups);
  return 0;
}
