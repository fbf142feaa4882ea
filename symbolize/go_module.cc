#include "symbolize/go_module.h"

#include <cstring>

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
  ModinfoField(mod, mlen, "path", out->main_package, sizeof out->main_package);
  ModinfoField(mod, mlen, "mod", out->main_module, sizeof out->main_module);
}

bool Inside(const ElfSection& s, uint64_t addr) { return addr >= s.addr && addr - s.addr < s.size; }

// Finds firstmoduledata by its first word (the pcHeader's address) in the
// sections the linker puts it in, and checks it before believing it.
bool FindModuledata(const ElfImage& elf, bool go120, GoModule* out, uint64_t* text,
                    uint64_t* gofunc) {
  ElfSection text_sec;
  if (!elf.FindSection(".text", &text_sec)) return false;
  ElfSection pcln{out->pclntab, out->pclntab_size, out->pclntab_addr};
  const int gofunc_word = go120 ? 40 : 38;
  constexpr size_t kWords = 41;
  for (const char* name : {".go.module", ".noptrdata", ".data"}) {
    ElfSection sec;
    if (!elf.FindSection(name, &sec) || sec.data == nullptr || sec.size < kWords * 8) continue;
    for (uint64_t off = 0; off + kWords * 8 <= sec.size; off += 8) {
      const uint8_t* m = sec.data + off;
      if (U64(m) != out->pclntab_addr) continue;
      uint64_t funcnametab = U64(m + 8), t = U64(m + 22 * 8), etext = U64(m + 23 * 8);
      uint64_t minpc = U64(m + 20 * 8), f = U64(m + gofunc_word * 8);
      if (!Inside(pcln, funcnametab) || !Inside(text_sec, t) || etext < t ||
          etext - text_sec.addr > text_sec.size || minpc < t || minpc > etext) {
        continue;
      }
      *text = t;
      *gofunc = f;
      return true;
    }
  }
  return false;
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
  uint64_t md_text = 0, md_gofunc = 0, value = 0, size = 0;
  bool have_md = FindModuledata(elf, magic == kMagic120, out, &md_text, &md_gofunc);
  // The text start: the header's (Go 1.18-1.25), else moduledata's, else the
  // symbol. Never .text's address: an external link puts C code first.
  uint64_t header_text = U64(pcln.data + 24);
  if (header_text != 0) {
    out->text_start = header_text;
  } else if (have_md) {
    out->text_start = md_text;
  } else if (elf.FindSymbol("runtime.text", &value, &size)) {
    out->text_start = value;
  } else {
    return false;
  }
  uint64_t gofunc = have_md ? md_gofunc : 0;
  if (gofunc == 0 && (elf.FindSymbol("go:func.*", &value, &size) ||
                      elf.FindSymbol("go.func.*", &value, &size))) {
    gofunc = value;
  }
  ElfSection fsec;
  if (gofunc != 0 && elf.SectionAt(gofunc, &fsec) && fsec.data != nullptr) {
    out->gofunc = fsec.data + (gofunc - fsec.addr);
    out->gofunc_size = fsec.size - (gofunc - fsec.addr);
  }
  return true;
}

}  // namespace cgoheap
