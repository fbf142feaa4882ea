#include "symbolize/symbol_index.h"

#include <elfutils/libdwfl.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "symbolize/elf_image.h"
#include "symbolize/libdw_file.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

Elf64_Shdr Section(uint64_t addr, uint64_t size, bool exec = true) {
  Elf64_Shdr sh{};
  sh.sh_addr = addr;
  sh.sh_size = size;
  sh.sh_flags = SHF_ALLOC | (exec ? SHF_EXECINSTR : SHF_WRITE);
  return sh;
}

unsigned char Info(unsigned bind, unsigned type) { return ELF64_ST_INFO(bind, type); }

TEST(SymbolIndexTest, TheInnermostSymbolThenTheStrongestBindingThenTheFirst) {
  const Elf64_Shdr text = Section(0x1000, 0x1000);
  SymbolIndex index;
  index.Add(0x1000, 0x100, Info(STB_GLOBAL, STT_FUNC), text, "outer");
  index.Add(0x1040, 0x20, Info(STB_LOCAL, STT_FUNC), text, "inner");
  index.Add(0x1200, 0x20, Info(STB_LOCAL, STT_FUNC), text, "alias_local");
  index.Add(0x1200, 0x20, Info(STB_WEAK, STT_FUNC), text, "alias_weak");
  index.Add(0x1200, 0x20, Info(STB_GLOBAL, STT_FUNC), text, "alias");
  index.Add(0x1200, 0x20, Info(STB_GLOBAL, STT_FUNC), text, "alias_later");
  index.Add(0x1200, 0x40, Info(STB_LOCAL, STT_FUNC), text, "longer");
  index.Build();
  uint64_t start = 0;
  EXPECT_EQ(index.Find(0xfff), "");
  EXPECT_EQ(index.Find(0x1000, &start), "outer");
  EXPECT_EQ(start, 0x1000u);
  EXPECT_EQ(index.Find(0x103f), "outer");
  EXPECT_EQ(index.Find(0x1040, &start), "inner");
  EXPECT_EQ(start, 0x1040u);
  EXPECT_EQ(index.Find(0x105f), "inner");
  EXPECT_EQ(index.Find(0x1060, &start), "outer");
  EXPECT_EQ(start, 0x1000u);
  EXPECT_EQ(index.Find(0x10ff), "outer");
  EXPECT_EQ(index.Find(0x1100), "");
  EXPECT_EQ(index.Find(0x1200), "alias");
  EXPECT_EQ(index.Find(0x121f), "alias");
  EXPECT_EQ(index.Find(0x1220), "longer");  // the aliases end; the longer one goes on
  EXPECT_EQ(index.Find(0x123f), "longer");
  EXPECT_EQ(index.Find(0x1240), "");
  EXPECT_EQ(index.symbols(), 7u);
}

TEST(SymbolIndexTest, ALabelReachesTheNextSymbolOrItsSectionsEnd) {
  const Elf64_Shdr text = Section(0x1000, 0x1000);
  SymbolIndex index;
  index.Add(0x1300, 0, Info(STB_GLOBAL, STT_NOTYPE), text, "label");
  index.Add(0x1380, 0x20, Info(STB_GLOBAL, STT_FUNC), text, "after");
  index.Add(0x1400, 0x10, Info(STB_GLOBAL, STT_FUNC), text, "host");
  index.Add(0x1408, 0, Info(STB_GLOBAL, STT_NOTYPE), text, "inside_host");
  index.Add(0x1500, 0, Info(STB_GLOBAL, STT_FUNC), text, "sizeless_function");
  index.Add(0x1580, 0x40, Info(STB_LOCAL, STT_OBJECT), text, "table_in_text");
  index.Add(0x1f00, 0, Info(STB_LOCAL, STT_NOTYPE), text, "last");
  index.Build();
  EXPECT_EQ(index.Find(0x1300), "label");
  EXPECT_EQ(index.Find(0x137f), "label");
  EXPECT_EQ(index.Find(0x1380), "after");
  EXPECT_EQ(index.Find(0x13a0), "");  // after "after": not the label's any more
  EXPECT_EQ(index.Find(0x1408), "host");
  EXPECT_EQ(index.Find(0x1410), "");  // a label inside a sized symbol names nothing
  EXPECT_EQ(index.Find(0x157f), "sizeless_function");
  EXPECT_EQ(index.Find(0x1580), "table_in_text");
  EXPECT_EQ(index.Find(0x15c0), "");  // data in code ends the label before it
  EXPECT_EQ(index.Find(0x1fff), "last");
  EXPECT_EQ(index.Find(0x2000), "");  // the section ends
}

TEST(SymbolIndexTest, IgnoresWhatIsNoCode) {
  SymbolIndex index;
  index.Add(0x3000, 0x10, Info(STB_GLOBAL, STT_FUNC), Section(0x3000, 0x100, false), "in_data");
  index.Add(0x1000, 0x10, Info(STB_LOCAL, STT_FILE), Section(0x1000, 0x100), "file.c");
  index.Add(0x1000, 0x10, Info(STB_LOCAL, STT_SECTION), Section(0x1000, 0x100), "section");
  index.Add(0x1000, 0x10, Info(STB_GLOBAL, STT_TLS), Section(0x1000, 0x100), "tls");
  index.Add(0x1000, 0x10, Info(STB_GLOBAL, STT_FUNC), Section(0x1000, 0x100), "");
  index.Build();
  EXPECT_EQ(index.symbols(), 0u);
  EXPECT_EQ(index.Find(0x3000), "");
  EXPECT_EQ(index.Find(0x1000), "");
  SymbolIndex empty;
  empty.Build();
  EXPECT_EQ(empty.Find(0), "");
  EXPECT_EQ(empty.Find(std::numeric_limits<uint64_t>::max()), "");
}

TEST(SymbolIndexTest, SizesPastTheEndOfTheAddressSpaceAreCut) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  SymbolIndex index;
  index.Add(max - 0x10, 0x100, Info(STB_GLOBAL, STT_FUNC), Section(max - 0x100, 0x1000), "top");
  index.Add(max - 0x20, 0, Info(STB_GLOBAL, STT_NOTYPE), Section(max - 0x100, 0x1000), "below");
  index.Build();
  EXPECT_EQ(index.Find(max - 0x20), "below");
  EXPECT_EQ(index.Find(max - 0x10), "top");
  EXPECT_EQ(index.Find(max - 1), "top");
}

// Against libdw's own lookup (what the symbolizer asked before) at the edges
// of every symbol in .text and at every 61st byte of it: the same names, or names of
// one address (aliases, which either may pick).
void ExpectAgreesWithLibdw(const std::string& path) {
  SCOPED_TRACE(path);
  ElfImage elf;
  ASSERT_TRUE(elf.Open(path.c_str()));
  LibdwFile libdw(path);
  Dwfl_Module* module = libdw.module();
  ASSERT_NE(module, nullptr);

  SymbolIndex from_elf = SymbolIndex::FromElf(elf);
  SymbolIndex from_dwfl = SymbolIndex::FromDwfl(module);
  ASSERT_GT(from_elf.symbols(), 100u);
  ASSERT_GT(from_dwfl.symbols(), 100u);
  ElfSection text;
  ASSERT_TRUE(elf.FindSection(".text", &text));
  std::vector<uint64_t> addrs;
  auto edges = [](void* ctx, const Elf64_Sym& s, std::string_view, const Elf64_Shdr&) {
    auto* out = static_cast<std::vector<uint64_t>*>(ctx);
    for (uint64_t a : {s.st_value - 1, s.st_value, s.st_value + 1, s.st_value + s.st_size - 1,
                       s.st_value + s.st_size}) {
      out->push_back(a);
    }
  };
  ASSERT_TRUE(elf.ForEachSymbol(false, edges, &addrs));
  // Only code: the index leaves out symbols of other sections (__abi_tag...).
  std::erase_if(addrs, [&](uint64_t a) { return a < text.addr || a - text.addr >= text.size; });
  for (uint64_t a = text.addr; a < text.addr + text.size; a += 61) addrs.push_back(a);

  size_t named = 0, checked = 0;
  for (uint64_t a : addrs) {
    const char* want = dwfl_module_addrname(module, a);
    std::string_view libdw = want != nullptr ? want : "";
    for (const SymbolIndex* index : {&from_elf, &from_dwfl}) {
      std::string_view got = index->Find(a);
      ++checked;
      named += !got.empty() && got == libdw;
      EXPECT_TRUE(SameSymbol(elf, got, libdw))
          << std::hex << "at 0x" << a << ": libdw says \"" << libdw << "\", the index \"" << got
          << "\"";
    }
  }
  EXPECT_GT(named, checked / 2);
}

TEST(SymbolIndexTest, NamesWhatLibdwNamesInAGoProgramWithCgo) {
  ExpectAgreesWithLibdw(testing::Program("seed_cmalloc"));
}

TEST(SymbolIndexTest, NamesWhatLibdwNamesInACppProgram) {
  ExpectAgreesWithLibdw(testing::Program("cppnames"));
}

}  // namespace
}  // namespace cgoheap
