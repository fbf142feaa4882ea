// cgoheap bench symbols: how long naming a C frame from the symbol tables
// takes, by the forwarder's index (symbolize/symbol_index.h) and by libdw's
// own lookup, side by side, over the same addresses of each file.
//
// The last line printed for each file is its result:
//   symbols: /usr/lib/x86_64-linux-gnu/libc.so.6: 6,818 code symbols, indexed in 3 ms; 2,001 addresses: 0.05 us each by the index, 166.4 us by libdw (3528x); same name for 2,001 of 2,001
// Without a FILE: cgoheap's own executable.
#include <elfutils/libdwfl.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <vector>

#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/report.h"
#include "common/flags.h"
#include "symbolize/elf_image.h"
#include "symbolize/libdw_file.h"
#include "symbolize/symbol_index.h"

namespace cgoheap::client {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 0 when measured, else 1 with what went wrong said.
int BenchFile(const std::string& path, uint64_t addresses) {
  ElfImage elf;
  ElfSection text;
  if (!elf.Open(path.c_str()) || !elf.FindSection(".text", &text) || text.size == 0) {
    std::cerr << "cgoheap bench symbols: " << path << ": not an ELF file with a .text section\n";
    return 1;
  }
  LibdwFile libdw(path);
  Dwfl_Module* module = libdw.module();
  if (module == nullptr) {
    std::cerr << "cgoheap bench symbols: " << path << ": libdw cannot read it\n";
    return 1;
  }
  dwfl_module_getsymtab(module);  // libdw's tables loaded outside both timings

  auto t0 = std::chrono::steady_clock::now();
  SymbolIndex index = SymbolIndex::FromDwfl(module);
  const double build_s = Since(t0);

  const uint64_t step = std::max<uint64_t>(text.size / std::max<uint64_t>(addresses, 1), 1);
  uint64_t n = 0, same = 0, sink = 0;
  t0 = std::chrono::steady_clock::now();
  for (uint64_t a = text.addr; a < text.addr + text.size; a += step, ++n) {
    sink += index.Find(a).size();
  }
  const double index_s = Since(t0);
  std::vector<const char*> libdw_names;
  libdw_names.reserve(n);
  t0 = std::chrono::steady_clock::now();
  for (uint64_t a = text.addr; a < text.addr + text.size; a += step) {
    libdw_names.push_back(dwfl_module_addrname(module, a));
  }
  const double libdw_s = Since(t0);
  // Outside the timings: do both name the same symbol?
  uint64_t i = 0;
  for (uint64_t a = text.addr; a < text.addr + text.size; a += step, ++i) {
    const char* name = libdw_names[i];
    sink += name != nullptr;
    same += SameSymbol(elf, index.Find(a), name != nullptr ? name : "");
  }
  const double per_index = index_s / static_cast<double>(n) * 1e6;
  const double per_libdw = libdw_s / static_cast<double>(n) * 1e6;
  std::cout << absl::StrFormat(
      "symbols: %s: %s code symbols, indexed in %.0f ms; %s addresses: %.2f us each by the "
      "index, %.1f us by libdw (%.0fx); same name for %s of %s%s\n",
      path, Thousands(index.symbols()), build_s * 1e3, Thousands(n), per_index,
      per_libdw, per_index > 0 ? per_libdw / per_index : 0.0, Thousands(same),
      Thousands(n), sink == 0 ? " (no symbols found)" : "");
  return 0;
}

}  // namespace

int BenchSymbolsCommand(const std::vector<std::string>& args) {
  uint64_t addresses = 2000;
  FlagSet flags("cgoheap bench symbols");
  flags.Uint("addresses", &addresses, "N",
             "addresses looked up in each file, spread over its .text (default 2000)", 1, 10000000);
  auto rest = flags.Parse(args, /*stop_at_positional=*/true);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap bench symbols");
  std::vector<std::string> files = *rest;
  if (!files.empty() && files[0] == "--") files.erase(files.begin());
  if (files.empty()) {  // cgoheap itself: a C++ program of 50,000 code symbols
    std::error_code ec;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    files.push_back(ec ? "/proc/self/exe" : self.string());
  }
  int failed = 0;
  for (const std::string& f : files) failed |= BenchFile(f, addresses);
  return failed ? 1 : 0;
}

}  // namespace cgoheap::client
