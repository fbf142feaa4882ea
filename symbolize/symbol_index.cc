#include "symbolize/symbol_index.h"

#include <elfutils/libdwfl.h>
#include <gelf.h>

#include <algorithm>
#include <limits>
#include <queue>
#include <tuple>

#include "symbolize/elf_image.h"

namespace cgoheap {

SymbolIndex SymbolIndex::FromElf(const ElfImage& elf) {
  SymbolIndex index;
  auto add = [](void* ctx, const Elf64_Sym& s, std::string_view name, const Elf64_Shdr& sh) {
    static_cast<SymbolIndex*>(ctx)->Add(s.st_value, s.st_size, s.st_info, sh, name);
  };
  if (!elf.ForEachSymbol(false, add, &index) || index.symbols() == 0) {
    elf.ForEachSymbol(true, add, &index);
  }
  index.Build();
  return index;
}

SymbolIndex SymbolIndex::FromDwfl(Dwfl_Module* module) {
  SymbolIndex index;
  const int n = dwfl_module_getsymtab(module);
  for (int i = 1; i < n; ++i) {  // 0 is the null symbol
    GElf_Sym sym;
    GElf_Addr addr = 0;
    GElf_Word shndx = SHN_UNDEF;
    Elf* elf = nullptr;
    Dwarf_Addr bias = 0;
    const char* name = dwfl_module_getsym_info(module, i, &sym, &addr, &shndx, &elf, &bias);
    if (name == nullptr || elf == nullptr || shndx == SHN_UNDEF || shndx >= SHN_LORESERVE) continue;
    GElf_Shdr sh;
    Elf_Scn* scn = elf_getscn(elf, shndx);
    if (scn == nullptr || gelf_getshdr(scn, &sh) == nullptr) continue;
    Elf64_Shdr section{};
    section.sh_addr = sh.sh_addr + bias;
    section.sh_size = sh.sh_size;
    section.sh_flags = sh.sh_flags;
    index.Add(addr, sym.st_size, sym.st_info, section, name);
  }
  index.Build();
  return index;
}

void SymbolIndex::Add(uint64_t start, uint64_t size, unsigned char st_info,
                      const Elf64_Shdr& section, std::string_view name) {
  // Data in code counts too (the constant tables of OpenSSL's assembly are
  // objects in .text): no pc is in one, but a label before it ends there.
  const unsigned type = ELF64_ST_TYPE(st_info);
  if (type == STT_SECTION || type == STT_FILE || type == STT_TLS) return;
  if (!(section.sh_flags & SHF_EXECINSTR) || name.empty()) return;
  if (symbols_.size() >= std::numeric_limits<uint32_t>::max()) return;
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const unsigned bind = ELF64_ST_BIND(st_info);
  Symbol s;
  s.start = start;
  s.end = size > max - start ? max : start + size;
  s.section_end = section.sh_size > max - section.sh_addr ? max : section.sh_addr + section.sh_size;
  s.name = name;
  s.order = static_cast<uint32_t>(symbols_.size());
  s.rank = bind == STB_GLOBAL || bind == STB_GNU_UNIQUE ? 2 : bind == STB_WEAK ? 1 : 0;
  symbols_.push_back(s);
}

void SymbolIndex::Build() {
  pieces_.clear();
  std::stable_sort(symbols_.begin(), symbols_.end(),
                   [](const Symbol& a, const Symbol& b) { return a.start < b.start; });
  // Labels first: each reaches to the next start (or its section's end),
  // unless a sized symbol covers its address.
  uint64_t sized_end = 0;  // the furthest end of the sized symbols seen (0: none)
  for (size_t i = 0; i < symbols_.size();) {
    size_t group_end = i;  // the symbols that start where symbols_[i] does
    while (group_end < symbols_.size() && symbols_[group_end].start == symbols_[i].start) {
      sized_end = std::max(sized_end, symbols_[group_end].end);  // a label's end is its start
      ++group_end;
    }
    const uint64_t start = symbols_[i].start;
    const bool covered = sized_end > start;
    const uint64_t next =
        group_end < symbols_.size() ? symbols_[group_end].start : std::numeric_limits<uint64_t>::max();
    for (; i < group_end; ++i) {
      Symbol& s = symbols_[i];
      if (s.end != s.start) continue;
      // A label: its extent, or none (end stays start).
      if (!covered && s.section_end > start) s.end = std::min(next, s.section_end);
    }
  }

  // Sweep the boundaries; at each, the covering symbol is the best of those
  // started and not yet ended (innermost, then rank, then first added).
  std::vector<uint64_t> bounds;
  bounds.reserve(2 * symbols_.size());
  for (const Symbol& s : symbols_) {
    if (s.end <= s.start) continue;
    bounds.push_back(s.start);
    bounds.push_back(s.end);
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  auto worse = [this](uint32_t a, uint32_t b) {
    const Symbol& x = symbols_[a];
    const Symbol& y = symbols_[b];
    return std::tuple(x.start, x.rank, y.order) < std::tuple(y.start, y.rank, x.order);
  };
  std::priority_queue<uint32_t, std::vector<uint32_t>, decltype(worse)> open(worse);
  size_t next = 0;
  for (size_t b = 0; b + 1 < bounds.size(); ++b) {
    const uint64_t lo = bounds[b], hi = bounds[b + 1];
    for (; next < symbols_.size() && symbols_[next].start <= lo; ++next) {
      if (symbols_[next].end > symbols_[next].start) open.push(static_cast<uint32_t>(next));
    }
    while (!open.empty() && symbols_[open.top()].end <= lo) open.pop();
    if (open.empty()) continue;
    const uint32_t best = open.top();
    if (!pieces_.empty() && pieces_.back().symbol == best && pieces_.back().hi == lo) {
      pieces_.back().hi = hi;
    } else {
      pieces_.push_back(Piece{lo, hi, best});
    }
  }
  pieces_.shrink_to_fit();
}

std::string_view SymbolIndex::Find(uint64_t addr, uint64_t* start) const {
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), addr,
                             [](uint64_t a, const Piece& p) { return a < p.lo; });
  if (it == pieces_.begin()) return {};
  --it;
  if (addr >= it->hi) return {};
  const Symbol& s = symbols_[it->symbol];
  if (start != nullptr) *start = s.start;
  return s.name;
}

}  // namespace cgoheap
