#include "symbolize/go_module.h"

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

constexpr size_t kModuledataWords = 64;

// Finds firstmoduledata by its first word (the pcHeader's address) in the
// sections the linker puts it in, and checks it before believing it. Its
// first 24 words have kept their places since Go 1.18; later ones move
// (Go 1.20 added covctrs, 1.27 reshaped the type fields), so gofunc is not
// taken from a fixed place: see ReadGoModule.
const uint8_t* FindModuledata(const ElfImage& elf, GoModule* out, uint64_t* text) {
  ElfSection text_sec;
  if (!elf.FindSection(".text", &text_sec)) return nullptr;
  ElfSection pcln{out->pclntab, out->pclntab_size, out->pclntab_addr};
  constexpr size_t kWords = kModuledataWords;
  for (const char* name : {".go.module", ".noptrdata", ".data"}) {
    ElfSection sec;
    if (!elf.FindSection(name, &sec) || sec.data == nullptr || sec.size < kWords * 8) continue;
    for (uint64_t off = 0; off + kWords * 8 <= sec.size; off += 8) {
      const uint8_t* m = sec.data + off;
      if (U64(m) != out->pclntab_addr) continue;
      uint64_t funcnametab = U64(m + 8), t = U64(m + 22 * 8), etext = U64(m + 23 * 8);
      uint64_t minpc = U64(m + 20 * 8);
      if (!Inside(pcln, funcnametab) || !Inside(text_sec, t) || etext < t ||
          etext - text_sec.addr > text_sec.size || minpc < t || minpc > etext) {
        continue;
      }
      *text = t;
      return m;
    }
  }
  return nullptr;
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
  ElfSection pcln;
  if (!elf.FindSection(".gopclntab", &pcln) || pcln.data == nullptr || pcln.size < 72) return false;
  out->pclntab_addr = pcln.addr;
  out->pclntab = pcln.data;
  out->pclntab_size = pcln.size;
  uint32_t magic;
  std::memcpy(&magic, pcln.data, 4);
  if (magic != kMagic118 && magic != kMagic120) return false;
  uint64_t md_text = 0, value = 0, size = 0;
  const uint8_t* md = FindModuledata(elf, out, &md_text);
  // The text start: the header's (Go 1.18-1.25), else moduledata's, else the
  // symbol. Never .text's address: an external link puts C code first.
  uint64_t header_text = U64(pcln.data + 24);
  if (header_text != 0) {
    out->text_start = header_text;
  } else if (md != nullptr) {
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
  for (size_t w = 24; md != nullptr && w < kModuledataWords; ++w) {
    if (TryFuncData(elf, tab, U64(md + w * 8), out)) break;
  }
  return true;
}

}  // namespace cgoheap
