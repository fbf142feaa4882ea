#include "symbolize/gopclntab.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "symbolize/elf_image.h"
#include "symbolize/go_module.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

struct Loaded {
  ElfImage elf;
  GoPclntab tab;
  bool ok = false;
};

void Load(const std::string& path, Loaded* l) {
  GoModule m;
  l->ok = l->elf.Open(path.c_str()) && ReadGoModule(l->elf, &m) &&
          l->tab.Init(m.pclntab, m.pclntab_size, m.text_start);
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

// Damaged tables are rejected at Init; a table cut inside its function data
// is read without ever reading past the end (ASan builds check that).
TEST(GoPclntabTest, TruncatedOrGarbageTablesAreRejected) {
  Loaded l;
  Load(testing::Program("seed_cstring"), &l);
  ASSERT_TRUE(l.ok);
  ElfSection pcln;
  ASSERT_TRUE(l.elf.FindSection(".gopclntab", &pcln));
  // Exact-size copies on the heap, so that a read past the end is caught.
  auto copy_of = [&](size_t n) {
    return std::vector<uint8_t>(pcln.data, pcln.data + n);
  };
  GoPclntab t;
  for (size_t cut : {size_t{0}, size_t{7}, size_t{64}, size_t{72}, pcln.size / 3}) {
    std::vector<uint8_t> c = copy_of(cut);
    EXPECT_FALSE(t.Init(c.data(), c.size(), 0x401000)) << "cut at " << cut;
  }
  std::vector<uint8_t> bad_magic = copy_of(pcln.size);
  bad_magic[0] ^= 0x55;
  EXPECT_FALSE(t.Init(bad_magic.data(), bad_magic.size(), 0x401000));
  std::vector<uint8_t> bad_ptr_size = copy_of(pcln.size);
  bad_ptr_size[7] = 4;  // a 32-bit table
  EXPECT_FALSE(t.Init(bad_ptr_size.data(), bad_ptr_size.size(), 0x401000));
  std::vector<uint8_t> too_many = copy_of(pcln.size);
  too_many[8 + 3] = 0x7f;  // nfunc far beyond the section
  EXPECT_FALSE(t.Init(too_many.data(), too_many.size(), 0x401000));
  std::vector<uint8_t> junk(4096, 0xff);
  EXPECT_FALSE(t.Init(junk.data(), junk.size(), 0));

  // Cut one byte short: the header is whole, the end is gone. Every lookup
  // either answers or says no; none reads past the copy.
  std::vector<uint8_t> short_by_one = copy_of(pcln.size - 1);
  ASSERT_TRUE(t.Init(short_by_one.data(), short_by_one.size(), l.tab.text_start()));
  GoPclntab::Func f;
  int found = 0;
  for (uint64_t pc = t.text_start(); pc < t.text_end(); pc += 257) {
    if (!t.FindFunc(pc, &f)) continue;
    ++found;
    GoPclntab::Frame frames[8];
    t.Frames(f, pc, frames, 8);
  }
  EXPECT_GT(found, 100);
}

}  // namespace
}  // namespace cgoheap
