#include "symbolize/gopclntab.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "symbolize/elf_image.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

struct Loaded {
  ElfImage elf;
  GoPclntab tab;
  bool ok = false;
};

void Load(const std::string& path, Loaded* l) {
  ElfSection pcln, text;
  l->ok = l->elf.Open(path.c_str()) && l->elf.FindSection(".gopclntab", &pcln) &&
          l->elf.FindSection(".text", &text) && l->tab.Init(pcln.data, pcln.size, text.addr);
}

TEST(GoPclntabTest, FindsFunctionsFilesAndLines) {
  Loaded l;
  Load(testing::Program("seed_cmalloc"), &l);
  ASSERT_TRUE(l.ok);
  GoPclntab::Func f;
  ASSERT_TRUE(l.tab.FindByName("main.main", &f));
  GoPclntab::Func found;
  ASSERT_TRUE(l.tab.FindFunc(f.entry + 1, &found));
  EXPECT_EQ(found.entry, f.entry);
  EXPECT_EQ(l.tab.FuncName(found), "main.main");
  std::string_view file;
  int32_t line = 0;
  ASSERT_TRUE(l.tab.Line(found, f.entry, &file, &line));
  std::string src = testing::ProgramSource("seed_cmalloc");
  EXPECT_EQ(file, src);
  EXPECT_EQ(line, testing::LineOf(src, "func main()"));
  // The symbol table agrees on where main.main starts.
  uint64_t value, size;
  ASSERT_TRUE(l.elf.FindSymbol("main.main", &value, &size));
  EXPECT_EQ(value, f.entry);
}

TEST(GoPclntabTest, CFunctionsAreNotGo) {
  Loaded l;
  Load(testing::Program("seed_cmalloc"), &l);
  ASSERT_TRUE(l.ok);
  uint64_t value = 0, size = 0;
  ASSERT_TRUE(l.elf.FindSymbol("x_cgo_thread_start", &value, &size));
  GoPclntab::Func f;
  EXPECT_FALSE(l.tab.FindFunc(value + 1, &f));
  EXPECT_FALSE(l.tab.FindFunc(0x10, &f));
}

TEST(GoPclntabTest, StrippedBinaryKeepsTheTable) {
  Loaded full, stripped;
  Load(testing::Program("seed_cmalloc"), &full);
  Load(testing::Program("seed_cmalloc_stripped"), &stripped);
  ASSERT_TRUE(full.ok);
  ASSERT_TRUE(stripped.ok);
  uint64_t v, s;
  EXPECT_FALSE(stripped.elf.FindSymbol("main.main", &v, &s)) << "expected no .symtab";
  GoPclntab::Func a, b;
  ASSERT_TRUE(full.tab.FindByName("runtime.asmcgocall.abi0", &a) ||
              full.tab.FindByName("runtime.asmcgocall", &a));
  ASSERT_TRUE(stripped.tab.FindByName(full.tab.FuncName(a), &b));
  EXPECT_EQ(a.end - a.entry, b.end - b.entry);
  EXPECT_EQ(full.tab.num_funcs(), stripped.tab.num_funcs());
}

TEST(GoPclntabTest, TruncatedOrGarbageTablesAreRejectedWithoutCrashing) {
  Loaded l;
  Load(testing::Program("seed_cstring"), &l);
  ASSERT_TRUE(l.ok);
  ElfSection pcln;
  ASSERT_TRUE(l.elf.FindSection(".gopclntab", &pcln));
  std::vector<uint8_t> copy(pcln.data, pcln.data + pcln.size);
  for (size_t cut : {size_t{0}, size_t{7}, size_t{64}, copy.size() / 3, copy.size() - 1}) {
    GoPclntab t;
    if (!t.Init(copy.data(), cut, 0x401000)) continue;
    GoPclntab::Func f;
    for (uint64_t pc = t.text_start(); pc < t.text_end(); pc += 4093) {
      if (t.FindFunc(pc, &f)) {
        std::string_view file;
        int32_t line;
        t.Line(f, pc, &file, &line);
        (void)t.FuncName(f);
      }
    }
  }
  std::vector<uint8_t> junk(4096, 0xff);
  GoPclntab t;
  EXPECT_FALSE(t.Init(junk.data(), junk.size(), 0));
}

}  // namespace
}  // namespace cgoheap
