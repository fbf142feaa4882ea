#include "client/fault_guard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "symbolize/elf_image.h"
#include "symbolize/file_access.h"
#include "symbolize/symbolizer.h"
#include "tests/testing/test_util.h"

namespace cgoheap::client {
namespace {

// A file shrunk under a mapping of it: the pages past its new end read as
// zeros (each counted once), the pages before it keep their bytes, and the
// process lives (without the handler the first read below is a SIGBUS).
TEST(FaultGuardTest, FileShrunkUnderItsMappingReadsZeros) {
  InstallFaultHandler();
  testing::TempDir dir;
  const std::string path = dir.path() + "/shrinks";
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  std::vector<unsigned char> bytes(3 * page, 0xab);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  void* p = mmap(nullptr, bytes.size(), PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  const auto* mapped = static_cast<const volatile unsigned char*>(p);
  EXPECT_EQ(mapped[2 * page], 0xab);  // in the page cache, mapped
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(page)), 0);

  const uint64_t before = g_zeroed_file_pages.load();
  EXPECT_EQ(mapped[page + 7], 0);
  EXPECT_EQ(mapped[2 * page + 100], 0);
  EXPECT_EQ(mapped[page + 8], 0);  // the same zero page: not counted again
  EXPECT_EQ(g_zeroed_file_pages.load() - before, 2u);
  EXPECT_EQ(mapped[page - 1], 0xab);
  munmap(p, bytes.size());
  close(fd);
}

// The symbolizer on an executable a target truncates after the forwarder
// opened it: its names and lines are lost (nothing sensible is left to
// read), the forwarder is not.
TEST(FaultGuardTest, SymbolizerOutlivesAnExecutableTruncatedUnderIt) {
  InstallFaultHandler();
  testing::TempDir dir;
  const std::string original = testing::Program("seed_cmalloc");
  const std::string copy = dir.path() + "/seed_cmalloc";
  std::filesystem::copy_file(original, copy);
  ElfImage elf;
  ASSERT_TRUE(elf.Open(original.c_str()));
  uint64_t main_main = 0, size = 0;
  ASSERT_TRUE(elf.FindSymbol("main.main", &main_main, &size));

  std::unique_ptr<ObjectFile> obj = ObjectFile::Open(copy);
  std::vector<SymbolizedFrame> frames;
  obj->Symbolize(main_main + 1, &frames);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().function, "main.main");

  ASSERT_EQ(truncate(copy.c_str(), 4096), 0);
  const uint64_t before = g_zeroed_file_pages.load();
  for (uint64_t pc = main_main + 1; pc < main_main + size; pc += 16) {
    frames.clear();
    obj->Symbolize(pc, &frames);
  }
  obj->LoadDebugInfo();  // libdw, reading what is left
  frames.clear();
  obj->Symbolize(main_main + 1, &frames);
  EXPECT_GT(g_zeroed_file_pages.load(), before);
  for (const SymbolizedFrame& f : frames) EXPECT_NE(f.function, "main.main");
}

}  // namespace
}  // namespace cgoheap::client
