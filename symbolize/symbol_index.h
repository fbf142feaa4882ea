// Which function symbol covers an address, found by binary search.
//
// The symbol tables of a program that links a large C++ library hold 10^5
// symbols and more (a Go program with DuckDB: 163,000). libdw's
// dwfl_module_addrname reads every one of them for every address it is
// asked about (about 2 ms each there), so naming the frames of such a
// program's stacks took seconds of the forwarder's time. This index is built
// once per object: the symbols' ranges are flattened into disjoint pieces,
// each naming the one symbol that covers it.
//
// The symbol that covers an address (close to what libdw decides):
// - a sized symbol, [start, start + size), that contains it; of several, the
//   one that starts last (the innermost), then global over weak over local,
//   then the first added;
// - else a label (size 0: assembly without .size) at or before it, up to the
//   next symbol's start or the end of the label's section, whichever comes
//   first. A label inside a sized symbol names nothing: the addresses past
//   that symbol's end are not the label's function either.
// Only symbols in executable sections count (an address looked up here is a
// pc), of any type but sections, files and thread-locals, as in libdw.
//
//   SymbolIndex index = SymbolIndex::FromElf(elf);
//   std::string_view name = index.Find(link_addr);  // "" when none covers it
#pragma once

#include <elf.h>

#include <cstdint>
#include <string_view>
#include <vector>

struct Dwfl_Module;

namespace cgoheap {

class ElfImage;

// Not thread-safe while built; const methods are thread-safe after Build.
class SymbolIndex {
 public:
  // The function symbols of the file's .symtab, or, when it has none there (a
  // stripped file), of its .dynsym. Built; the names point into elf.
  static SymbolIndex FromElf(const ElfImage& elf);
  // The symbols libdw found for the module (its own tables, those of a
  // separate debug file, or .dynsym). Built; the names point into libdw's
  // data of the module.
  static SymbolIndex FromDwfl(Dwfl_Module* module);

  // A symbol of an ELF symbol table: its value and size, st_info, and the
  // header of its section (sh_addr, sh_size, sh_flags: the same address
  // space as start). The name must outlive the index. Ignored outside
  // executable sections, and for section, file and thread-local symbols.
  void Add(uint64_t start, uint64_t size, unsigned char st_info, const Elf64_Shdr& section,
           std::string_view name);
  // Flattens what was added, once; Find answers only after it.
  void Build();

  // The name of the symbol that covers addr and, in *start, its start; ""
  // when none does.
  std::string_view Find(uint64_t addr, uint64_t* start = nullptr) const;
  size_t symbols() const { return symbols_.size(); }

 private:
  struct Symbol {
    uint64_t start, end;  // end == start: a label, until Build gives it its extent
    uint64_t section_end;
    std::string_view name;
    uint32_t order;  // when added
    uint8_t rank;    // global 2, weak 1, local 0
  };
  struct Piece {
    uint64_t lo, hi;
    uint32_t symbol;
  };
  std::vector<Symbol> symbols_;
  std::vector<Piece> pieces_;  // disjoint, by lo
};

}  // namespace cgoheap
