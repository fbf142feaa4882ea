#include "symbolize/libdw_file.h"

#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <unistd.h>

#include "symbolize/elf_image.h"

namespace cgoheap {

LibdwFile::LibdwFile(const std::string& path) {
  static const Dwfl_Callbacks kCallbacks = {
      .find_elf = nullptr,
      .find_debuginfo = dwfl_standard_find_debuginfo,
      .section_address = dwfl_offline_section_address,
      .debuginfo_path = nullptr,
  };
  fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  dwfl_ = dwfl_begin(&kCallbacks);
  if (fd_ < 0 || dwfl_ == nullptr) return;
  dwfl_report_begin(dwfl_);
  // libdw owns (and closes) the descriptor it is given.
  module_ = dwfl_report_elf(dwfl_, path.c_str(), path.c_str(), dup(fd_), 0, false);
  dwfl_report_end(dwfl_, nullptr, nullptr);
}

bool SameSymbol(const ElfImage& elf, std::string_view a, std::string_view b) {
  if (a == b) return true;
  uint64_t va = 0, vb = 0, size = 0;
  return !a.empty() && !b.empty() && elf.FindSymbol(a, &va, &size) && elf.FindSymbol(b, &vb, &size) &&
         va == vb;
}

LibdwFile::~LibdwFile() {
  if (dwfl_ != nullptr) dwfl_end(dwfl_);
  if (fd_ >= 0) close(fd_);
}

}  // namespace cgoheap
