#include "symbolize/elf_image.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace cgoheap {
namespace {

template <typename T>
bool ReadAt(const uint8_t* data, size_t size, uint64_t off, T* out) {
  if (off > size || size - off < sizeof(T)) return false;
  std::memcpy(out, data + off, sizeof(T));
  return true;
}

std::string_view CStrAt(const uint8_t* base, uint64_t size, uint64_t off) {
  if (off >= size) return {};
  const char* s = reinterpret_cast<const char*>(base + off);
  const void* nul = std::memchr(s, 0, size - off);
  if (nul == nullptr) return {};
  return std::string_view(s, static_cast<const char*>(nul) - s);
}

}  // namespace

ElfImage::~ElfImage() {
  if (owned_ && data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
}

bool ElfImage::Open(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = OpenFd(fd);
  close(fd);
  return ok;
}

bool ElfImage::OpenFd(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    return false;
  }
  void* p = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<const uint8_t*>(p);
  size_ = st.st_size;
  owned_ = true;
  return Parse();
}

bool ElfImage::OpenMemory(const uint8_t* data, size_t size) {
  data_ = data;
  size_ = size;
  owned_ = false;
  return Parse();
}

bool ElfImage::Parse() {
  Elf64_Ehdr eh;
  if (!ReadAt(data_, size_, 0, &eh)) return false;
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_ident[EI_DATA] != ELFDATA2LSB) {
    return false;
  }
  shoff_ = eh.e_shoff;
  shnum_ = eh.e_shnum;
  shentsize_ = eh.e_shentsize;
  shstrndx_ = eh.e_shstrndx;
  if (shnum_ != 0 && shentsize_ != sizeof(Elf64_Shdr)) shnum_ = 0;
  if (shoff_ > size_ || (size_ - shoff_) / sizeof(Elf64_Shdr) < shnum_) shnum_ = 0;
  return true;
}

bool ElfImage::IsSharedObject() const {
  Elf64_Ehdr eh;
  return ReadAt(data_, size_, 0, &eh) && eh.e_type == ET_DYN;
}

std::string_view ElfImage::NeededStartingWith(std::string_view prefix) const {
  ElfSection dyn, strs;
  if (!FindSection(".dynamic", &dyn) || !FindSection(".dynstr", &strs) || dyn.data == nullptr ||
      strs.data == nullptr) {
    return {};
  }
  for (uint64_t off = 0; off + sizeof(Elf64_Dyn) <= dyn.size; off += sizeof(Elf64_Dyn)) {
    Elf64_Dyn d;
    std::memcpy(&d, dyn.data + off, sizeof d);
    if (d.d_tag == DT_NULL) break;
    if (d.d_tag != DT_NEEDED) continue;
    // memcmp, not starts_with: the agent shares this file, and
    // string_view's may throw (it would pull libstdc++'s exceptions in).
    std::string_view name = CStrAt(strs.data, strs.size, d.d_un.d_val);
    if (name.size() >= prefix.size() &&
        std::memcmp(name.data(), prefix.data(), prefix.size()) == 0) {
      return name;
    }
  }
  return {};
}

bool ElfImage::FindSection(std::string_view name, ElfSection* out) const {
  Elf64_Shdr strsh;
  if (shnum_ == 0 || shstrndx_ >= shnum_ ||
      !ReadAt(data_, size_, shoff_ + uint64_t{shstrndx_} * sizeof(Elf64_Shdr), &strsh)) {
    return false;
  }
  if (strsh.sh_offset > size_ || size_ - strsh.sh_offset < strsh.sh_size) return false;
  for (uint16_t i = 0; i < shnum_; ++i) {
    Elf64_Shdr sh;
    if (!ReadAt(data_, size_, shoff_ + uint64_t{i} * sizeof(Elf64_Shdr), &sh)) return false;
    if (CStrAt(data_ + strsh.sh_offset, strsh.sh_size, sh.sh_name) != name) continue;
    return SectionOf(sh, out);
  }
  return false;
}

bool ElfImage::SectionAt(uint64_t addr, ElfSection* out) const {
  for (uint16_t i = 0; i < shnum_; ++i) {
    Elf64_Shdr sh;
    if (!ReadAt(data_, size_, shoff_ + uint64_t{i} * sizeof(Elf64_Shdr), &sh)) return false;
    if (!(sh.sh_flags & SHF_ALLOC) || addr < sh.sh_addr || addr - sh.sh_addr >= sh.sh_size) continue;
    return SectionOf(sh, out);
  }
  return false;
}

bool ElfImage::SectionOf(const Elf64_Shdr& sh, ElfSection* out) const {
  out->addr = sh.sh_addr;
  out->size = sh.sh_size;
  if (sh.sh_type == SHT_NOBITS) {
    out->data = nullptr;
    return true;
  }
  if (sh.sh_offset > size_ || size_ - sh.sh_offset < sh.sh_size) return false;
  out->data = data_ + sh.sh_offset;
  return true;
}

bool ElfImage::SymbolTable(const char* tab, const char* strtab, ElfSection* syms,
                           ElfSection* strs) const {
  return FindSection(tab, syms) && syms->data != nullptr && FindSection(strtab, strs) &&
         strs->data != nullptr;
}

bool ElfImage::FindSymbol(std::string_view name, uint64_t* value, uint64_t* size) const {
  static constexpr const char* kTables[][2] = {{".symtab", ".strtab"}, {".dynsym", ".dynstr"}};
  for (const auto& t : kTables) {
    ElfSection syms, strs;
    if (!SymbolTable(t[0], t[1], &syms, &strs)) continue;
    size_t n = syms.size / sizeof(Elf64_Sym);
    for (size_t i = 0; i < n; ++i) {
      Elf64_Sym s;
      std::memcpy(&s, syms.data + i * sizeof(Elf64_Sym), sizeof s);
      if (s.st_shndx == SHN_UNDEF) continue;
      if (CStrAt(strs.data, strs.size, s.st_name) == name) {
        *value = s.st_value;
        *size = s.st_size;
        return true;
      }
    }
  }
  return false;
}

bool ElfImage::ForEachSymbol(bool dynamic, SymbolVisitor fn, void* ctx) const {
  ElfSection syms, strs;
  if (!(dynamic ? SymbolTable(".dynsym", ".dynstr", &syms, &strs)
                : SymbolTable(".symtab", ".strtab", &syms, &strs))) {
    return false;
  }
  size_t n = syms.size / sizeof(Elf64_Sym);
  for (size_t i = 0; i < n; ++i) {
    Elf64_Sym s;
    std::memcpy(&s, syms.data + i * sizeof(Elf64_Sym), sizeof s);
    // SHN_UNDEF, and the reserved indexes (SHN_ABS, SHN_COMMON, SHN_XINDEX):
    // no section of this file holds the symbol.
    if (s.st_shndx == SHN_UNDEF || s.st_shndx >= SHN_LORESERVE || s.st_shndx >= shnum_) continue;
    Elf64_Shdr sh;
    if (!ReadAt(data_, size_, shoff_ + uint64_t{s.st_shndx} * sizeof(Elf64_Shdr), &sh)) continue;
    std::string_view name = CStrAt(strs.data, strs.size, s.st_name);
    if (!name.empty()) fn(ctx, s, name, sh);
  }
  return true;
}

bool ElfImage::FindProgramHeader(uint32_t type, uint32_t flags, Elf64_Phdr* out) const {
  Elf64_Ehdr eh;
  if (!ReadAt(data_, size_, 0, &eh) || eh.e_phentsize != sizeof(Elf64_Phdr)) return false;
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    if (!ReadAt(data_, size_, eh.e_phoff + uint64_t{i} * sizeof *out, out)) return false;
    if (out->p_type == type && (out->p_flags & flags) == flags) return true;
  }
  return false;
}

bool ElfImage::ExecSegment(uint64_t* vaddr, uint64_t* offset, uint64_t* filesz) const {
  Elf64_Phdr ph;
  if (!FindProgramHeader(PT_LOAD, PF_X, &ph)) return false;
  *vaddr = ph.p_vaddr;
  *offset = ph.p_offset;
  *filesz = ph.p_filesz;
  return true;
}

bool ElfImage::HasInterpreter() const {
  Elf64_Phdr ph;
  return FindProgramHeader(PT_INTERP, 0, &ph);
}

bool ElfImage::NoteDesc(std::string_view section, const uint8_t** desc, uint32_t* size) const {
  ElfSection note;
  if (!FindSection(section, &note) || note.data == nullptr || note.size < 16) return false;
  uint32_t namesz, descsz;
  std::memcpy(&namesz, note.data, 4);
  std::memcpy(&descsz, note.data + 4, 4);
  uint64_t off = 12 + ((uint64_t{namesz} + 3) & ~uint64_t{3});
  if (off + descsz > note.size) return false;
  *desc = note.data + off;
  *size = descsz;
  return true;
}

size_t ElfImage::BuildId(char* out, size_t cap) const {
  if (cap == 0) return 0;
  out[0] = 0;
  static constexpr char kHex[] = "0123456789abcdef";
  const uint8_t* desc;
  uint32_t size;
  size_t n = 0;
  if (NoteDesc(".note.gnu.build-id", &desc, &size)) {
    for (uint32_t i = 0; i < size && n + 2 < cap; ++i) {
      out[n++] = kHex[desc[i] >> 4];
      out[n++] = kHex[desc[i] & 15];
    }
  } else if (NoteDesc(".note.go.buildid", &desc, &size)) {
    // Go's own note (name "Go"): the build id is printable text.
    for (uint32_t i = 0; i < size && n + 1 < cap; ++i) {
      char c = static_cast<char>(desc[i]);
      out[n++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
  }
  out[n] = 0;
  return n;
}

}  // namespace cgoheap
