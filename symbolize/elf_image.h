// Read-only view of a 64-bit little-endian ELF file mapped in memory.
//
// Allocation-free and bounds-checked on every access, because the agent uses
// it inside the target process at start-up (where malloc is the function being
// hooked) and the forwarder uses it on whatever files a process has mapped.
//
//   ElfImage elf;
//   if (elf.Open("/proc/self/exe")) {
//     ElfSection text;
//     if (elf.FindSection(".gopclntab", &text)) { ... text.data, text.size ... }
//   }
#pragma once

#include <elf.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cgoheap {

struct ElfSection {
  const uint8_t* data = nullptr;  // nullptr for SHT_NOBITS
  uint64_t size = 0;
  uint64_t addr = 0;  // link-time virtual address
};

// Not thread-safe while opening; const methods are thread-safe after Open.
class ElfImage {
 public:
  ElfImage() = default;
  ~ElfImage();
  ElfImage(const ElfImage&) = delete;
  ElfImage& operator=(const ElfImage&) = delete;

  // Maps the file read-only. Returns false if it is not a 64-bit ELF. For
  // files a process names about itself (/proc/self/exe in the agent).
  bool Open(const char* path);
  // The same from an open file (not closed here): the forwarder opens what a
  // target names with OpenRegularFile (symbolize/file_access.h).
  bool OpenFd(int fd);
  // Views an ELF image already in memory (not owned).
  bool OpenMemory(const uint8_t* data, size_t size);

  bool FindSection(std::string_view name, ElfSection* out) const;
  // The allocated section whose addresses contain addr (link-time address).
  bool SectionAt(uint64_t addr, ElfSection* out) const;
  // Looks a symbol up by exact name in .symtab, then .dynsym.
  bool FindSymbol(std::string_view name, uint64_t* value, uint64_t* size) const;
  // Calls fn(ctx, symbol, name, its section's header) for each symbol of
  // .symtab (dynamic: .dynsym) defined in a section of the file, with a
  // name. Returns false when the file has no such table.
  using SymbolVisitor = void (*)(void* ctx, const Elf64_Sym& sym, std::string_view name,
                                 const Elf64_Shdr& section);
  bool ForEachSymbol(bool dynamic, SymbolVisitor fn, void* ctx) const;
  // Hex of the GNU build id note, or of the Go build id when there is none.
  // Writes at most cap-1 chars plus NUL; returns the length written.
  size_t BuildId(char* out, size_t cap) const;
  // The lowest p_vaddr minus p_offset of the executable PT_LOAD: subtracting it
  // from (runtime pc - mapping start + mapping offset) gives the link address.
  bool ExecSegment(uint64_t* vaddr, uint64_t* offset, uint64_t* filesz) const;
  bool IsSharedObject() const;  // ET_DYN (PIE or shared library)
  // Whether it names a dynamic loader (PT_INTERP): a statically linked
  // executable does not, and nothing loads an LD_PRELOAD library into it.
  bool HasInterpreter() const;
  // The first library the dynamic section needs (DT_NEEDED) whose name
  // starts with prefix; empty when none does, or there is no such section.
  std::string_view NeededStartingWith(std::string_view prefix) const;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  bool Parse();
  // The first program header of this type with all of these p_flags.
  bool FindProgramHeader(uint32_t type, uint32_t flags, Elf64_Phdr* out) const;
  // The view of a section header's contents, checked against the file.
  bool SectionOf(const Elf64_Shdr& sh, ElfSection* out) const;
  // The descriptor of the first note in a note section.
  bool NoteDesc(std::string_view section, const uint8_t** desc, uint32_t* size) const;
  bool SymbolTable(const char* tab, const char* strtab, ElfSection* syms,
                   ElfSection* strs) const;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;
  uint64_t shoff_ = 0;
  uint16_t shnum_ = 0;
  uint16_t shentsize_ = 0;
  uint16_t shstrndx_ = 0;
};

}  // namespace cgoheap
