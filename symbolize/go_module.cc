#include "symbolize/go_module.h"

#include <elf.h>

#include <cstring>

#include "symbolize/gopclntab.h"

namespace cgoheap {
namespace {

constexpr uint32_t kMagic118 = 0xfffffff0;
constexpr uint32_t kMagic120 = 0xfffffff1;

uint64_t U64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

void CopyString(const uint8_t* s, size_t n, char* out, size_t cap) {
  size_t len = n < cap - 1 ? n : cap - 1;
  std::memcpy(out, s, len);
  out[len] = 0;
}

// Reads a uvarint-prefixed string at *p (advanced past it).
bool PrefixedString(const uint8_t** p, const uint8_t* end, const uint8_t** s, uint64_t* n) {
  uint64_t len = 0;
  for (int shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t b = *(*p)++;
    len |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) {
      if (len > static_cast<uint64_t>(end - *p)) return false;
      *s = *p;
      *n = len;
      *p += len;
      return true;
    }
  }
  return false;
}

// The value of the line of modinfo that starts with key and a tab, up to the
// next tab or newline.
void ModinfoField(const uint8_t* mod, uint64_t n, const char* key, char* out, size_t cap) {
  size_t klen = std::strlen(key);
  for (uint64_t i = 0; i < n;) {
    uint64_t eol = i;
    while (eol < n && mod[eol] != '\n') ++eol;
    if (eol - i > klen && std::memcmp(mod + i, key, klen) == 0 && mod[i + klen] == '\t') {
      uint64_t v = i + klen + 1, e = v;
      while (e < eol && mod[e] != '\t') ++e;
      CopyString(mod + v, e - v, out, cap);
      return;
    }
    i = eol + 1;
  }
}

// .go.buildinfo (debug/buildinfo): a 32-byte header starting with
// "\xff Go buildinf:", then, since Go 1.18 (flags bit 2), the version and
// the module info as uvarint-prefixed strings.
void ReadBuildInfo(const ElfImage& elf, GoModule* out) {
  ElfSection sec;
  if (!elf.FindSection(".go.buildinfo", &sec) || sec.data == nullptr || sec.size < 32) return;
  static constexpr char kMagic[] = "\xff Go buildinf:";
  if (std::memcmp(sec.data, kMagic, 14) != 0 || (sec.data[15] & 2) == 0) return;
  const uint8_t* p = sec.data + 32;
  const uint8_t* end = sec.data + sec.size;
  const uint8_t *vers, *mod;
  uint64_t vlen, mlen;
  if (!PrefixedString(&p, end, &vers, &vlen)) return;
  CopyString(vers, vlen, out->version, sizeof out->version);
  if (!PrefixedString(&p, end, &mod, &mlen)) return;
  // The module info is framed by 16-byte sentinels (debug/buildinfo).
  if (mlen >= 33 && mod[mlen - 17] == '\n') {
    mod += 16;
    mlen -= 32;
  }
  ModinfoField(mod, mlen, "path", out->main_package, sizeof out->main_package);
  ModinfoField(mod, mlen, "mod", out->main_module, sizeof out->main_module);
}

bool Inside(const ElfSection& s, uint64_t addr) { return addr >= s.addr && addr - s.addr < s.size; }

// Pointers in a position-independent executable (-buildmode=pie) are 0 in
// the file: the loader sets them from R_X86_64_RELATIVE relocations, whose
// addend is the link-time value.
class RelativeRelocations {
 public:
  explicit RelativeRelocations(const ElfImage& elf) {
    if (elf.FindSection(".rela.dyn", &rela_) && rela_.data != nullptr) {
      n_ = rela_.size / sizeof(Elf64_Rela);
    }
  }
  size_t size() const { return n_; }
  // The i-th relocation, if it is a RELATIVE one.
  bool At(size_t i, uint64_t* offset, uint64_t* addend) const {
    Elf64_Rela r;
    std::memcpy(&r, rela_.data + i * sizeof r, sizeof r);
    if (ELF64_R_TYPE(r.r_info) != R_X86_64_RELATIVE) return false;
    *offset = r.r_offset;
    *addend = static_cast<uint64_t>(r.r_addend);
    return true;
  }
  // The value the loader writes at addr, if a relocation sets it.
  bool ValueAt(uint64_t addr, uint64_t* value) const {
    uint64_t offset, addend;
    for (size_t i = 0; i < n_; ++i) {
      if (At(i, &offset, &addend) && offset == addr) {
        *value = addend;
        return true;
      }
    }
    return false;
  }

 private:
  ElfSection rela_{};
  size_t n_ = 0;
};

// The word at link address addr as the running program sees it.
bool WordAt(const ElfImage& elf, const RelativeRelocations& relocs, uint64_t addr, uint64_t* v) {
  ElfSection sec;
  if (!elf.SectionAt(addr, &sec) || sec.data == nullptr || addr + 8 > sec.addr + sec.size) {
    return false;
  }
  *v = U64(sec.data + (addr - sec.addr));
  uint64_t relocated;
  if (*v == 0 && relocs.ValueAt(addr, &relocated)) *v = relocated;
  return true;
}

// True when addr starts a pcHeader of a 64-bit Go 1.18+ table.
bool LooksLikePcHeader(const ElfSection& sec, uint64_t addr) {
  if (!Inside(sec, addr) || sec.data == nullptr || sec.addr + sec.size - addr < 72) return false;
  const uint8_t* p = sec.data + (addr - sec.addr);
  uint32_t magic;
  std::memcpy(&magic, p, 4);
  return (magic == kMagic118 || magic == kMagic120) && p[4] == 0 && p[5] == 0 && p[7] == 8;
}

// Where the table is: .gopclntab; in a position-independent build before Go
// 1.26, inside .data.rel.ro, found by its symbols, else as the target of
// moduledata's first word (a relocation whose target starts a pcHeader).
bool FindPclntab(const ElfImage& elf, const RelativeRelocations& relocs, GoModule* out) {
  ElfSection sec;
  uint64_t addr = 0, value = 0, size = 0;
  if (elf.FindSection(".gopclntab", &sec)) {
    addr = sec.addr;
  } else if (elf.FindSymbol("runtime.pclntab", &value, &size) && elf.SectionAt(value, &sec)) {
    addr = value;
  } else {
    uint64_t offset, addend;
    for (size_t i = 0; i < relocs.size() && addr == 0; ++i) {
      if (relocs.At(i, &offset, &addend) && elf.SectionAt(addend, &sec) &&
          LooksLikePcHeader(sec, addend)) {
        addr = addend;
      }
    }
  }
  if (addr == 0 || !LooksLikePcHeader(sec, addr)) return false;
  out->pclntab_addr = addr;
  out->pclntab = sec.data + (addr - sec.addr);
  out->pclntab_size = sec.size - (addr - sec.addr);
  return true;
}

constexpr size_t kModuledataWords = 64;

// Checks a moduledata candidate at link address md: its funcnametab points
// into the table, its text range into .text. *text: its text start.
bool IsModuledata(const ElfImage& elf, const RelativeRelocations& relocs, const GoModule& m,
                  const ElfSection& text_sec, uint64_t md, uint64_t* text) {
  ElfSection pcln{m.pclntab, m.pclntab_size, m.pclntab_addr};
  uint64_t first, funcnametab, minpc, t, etext;
  if (!WordAt(elf, relocs, md, &first) || first != m.pclntab_addr ||
      !WordAt(elf, relocs, md + 8, &funcnametab) || !WordAt(elf, relocs, md + 20 * 8, &minpc) ||
      !WordAt(elf, relocs, md + 22 * 8, &t) || !WordAt(elf, relocs, md + 23 * 8, &etext)) {
    return false;
  }
  if (!Inside(pcln, funcnametab) || !Inside(text_sec, t) || etext < t ||
      etext - text_sec.addr > text_sec.size || minpc < t || minpc > etext) {
    return false;
  }
  *text = t;
  return true;
}

// Finds firstmoduledata (its link address; 0 if not found) by its first
// word, the pcHeader's address, in the sections the linker puts it in, and
// checks it before believing it. Its first 24 words have kept their places
// since Go 1.18; later ones move (Go 1.20 added covctrs, 1.27 reshaped the
// type fields), so gofunc is not taken from a fixed place: see ReadGoModule.
uint64_t FindModuledata(const ElfImage& elf, const RelativeRelocations& relocs,
                        const GoModule& m, uint64_t* text) {
  ElfSection text_sec;
  if (!elf.FindSection(".text", &text_sec)) return 0;
  for (const char* name : {".go.module", ".noptrdata", ".data"}) {
    ElfSection sec;
    if (!elf.FindSection(name, &sec) || sec.data == nullptr) continue;
    for (uint64_t off = 0; off + kModuledataWords * 8 <= sec.size; off += 8) {
      if (U64(sec.data + off) == m.pclntab_addr &&
          IsModuledata(elf, relocs, m, text_sec, sec.addr + off, text)) {
        return sec.addr + off;
      }
    }
  }
  // A position-independent build: the first word is set by a relocation.
  uint64_t offset, addend;
  for (size_t i = 0; i < relocs.size(); ++i) {
    if (relocs.At(i, &offset, &addend) && addend == m.pclntab_addr &&
        IsModuledata(elf, relocs, m, text_sec, offset, text)) {
      return offset;
    }
  }
  return 0;
}

// Sets out->gofunc to the bytes at link address addr if the inline trees
// read right from there.
bool TryFuncData(const ElfImage& elf, const GoPclntab& tab, uint64_t addr, GoModule* out) {
  ElfSection sec;
  if (addr == 0 || !elf.SectionAt(addr, &sec) || sec.data == nullptr) return false;
  const uint8_t* data = sec.data + (addr - sec.addr);
  size_t size = sec.size - (addr - sec.addr);
  if (!tab.FuncDataLooksRight(data, size)) return false;
  out->gofunc = data;
  out->gofunc_size = size;
  return true;
}

}  // namespace

bool ReadGoModule(const ElfImage& elf, GoModule* out) {
  *out = GoModule{};
  ReadBuildInfo(elf, out);
  RelativeRelocations relocs(elf);
  if (!FindPclntab(elf, relocs, out)) return false;
  uint64_t md_text = 0, value = 0, size = 0;
  uint64_t md = FindModuledata(elf, relocs, *out, &md_text);
  // The text start: the header's (Go 1.18-1.25), else moduledata's, else the
  // symbol. Never .text's address: an external link puts C code first.
  uint64_t header_text = 0;
  WordAt(elf, relocs, out->pclntab_addr + 24, &header_text);
  if (header_text != 0) {
    out->text_start = header_text;
  } else if (md != 0) {
    out->text_start = md_text;
  } else if (elf.FindSymbol("runtime.text", &value, &size)) {
    out->text_start = value;
  } else {
    return false;
  }
  // gofunc: the symbol where there is one; else the moduledata word from
  // which the inline trees read right (its place differs by release).
  GoPclntab tab;
  if (!tab.Init(out->pclntab, out->pclntab_size, out->text_start)) return false;
  if ((elf.FindSymbol("go:func.*", &value, &size) || elf.FindSymbol("go.func.*", &value, &size)) &&
      TryFuncData(elf, tab, value, out)) {
    return true;
  }
  for (size_t w = 24; md != 0 && w < kModuledataWords; ++w) {
    uint64_t candidate;
    if (WordAt(elf, relocs, md + w * 8, &candidate) && TryFuncData(elf, tab, candidate, out)) break;
  }
  return true;
}

}  // namespace cgoheap
