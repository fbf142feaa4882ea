// One ELF file opened with libdw by itself (offline, debug files found the
// standard way), to compare the symbolizer's answers with libdw's own: the
// symbol index's tests and `cgoheap bench symbols`.
//
//   LibdwFile f(path);
//   if (f.module() != nullptr) dwfl_module_addrname(f.module(), addr);
#pragma once

#include <string>
#include <string_view>

struct Dwfl;
struct Dwfl_Module;

namespace cgoheap {

class LibdwFile {
 public:
  explicit LibdwFile(const std::string& path);
  ~LibdwFile();
  LibdwFile(const LibdwFile&) = delete;
  LibdwFile& operator=(const LibdwFile&) = delete;

  Dwfl_Module* module() const { return module_; }  // nullptr: libdw cannot read it

 private:
  Dwfl* dwfl_ = nullptr;
  int fd_ = -1;
  Dwfl_Module* module_ = nullptr;
};

class ElfImage;

// Whether two answers for one address name the same symbol: the same name,
// or two names of one address in elf (aliases, which either may pick).
bool SameSymbol(const ElfImage& elf, std::string_view a, std::string_view b);

}  // namespace cgoheap
