// What the agent and the symbolizer read from Go executables, checked on a
// binary built by every Go release the machine has: the build info, the
// text start (.gopclntab stopped carrying it in 1.26), asmcgocall's layout,
// and that a `-s -w` build gives the same functions and lines.
#include <gtest/gtest.h>

#include <string>

#include "agent/agent.h"
#include "symbolize/elf_image.h"
#include "symbolize/go_module.h"
#include "symbolize/gopclntab.h"
#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

class GoBinaryTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string P(const std::string& name) const { return ProgramFor(GetParam(), name); }
  // Go 1.21 is 21.
  int Minor() const { return std::stoi(GetParam().substr(GetParam().find('.') + 1)); }
};

INSTANTIATE_TEST_SUITE_P(Go, GoBinaryTest, ::testing::ValuesIn(GoReleases()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return GoTestSuffix(info.param);
                         });

TEST_P(GoBinaryTest, BuildInfoAndTextStartAreRead) {
  ElfImage elf;
  ASSERT_TRUE(elf.Open(P("seed_cstring").c_str()));
  GoModule m;
  ASSERT_TRUE(ReadGoModule(elf, &m));
  EXPECT_EQ(std::string(m.version).rfind("go" + GetParam() + ".", 0), 0u) << m.version;
  EXPECT_STREQ(m.main_package, "command-line-arguments");
  uint64_t text = 0, size = 0;
  ASSERT_TRUE(elf.FindSymbol("runtime.text", &text, &size));
  EXPECT_EQ(m.text_start, text);
  ASSERT_NE(m.gofunc, nullptr) << "no go:func.*: inlined calls could not be expanded";
  uint64_t gofunc = 0;
  ASSERT_TRUE(elf.FindSymbol(Minor() >= 20 ? "go:func.*" : "go.func.*", &gofunc, &size));
  ElfSection sec;
  ASSERT_TRUE(elf.SectionAt(gofunc, &sec));
  EXPECT_EQ(m.gofunc, sec.data + (gofunc - sec.addr));
}

TEST_P(GoBinaryTest, AsmcgocallLayoutIsUnderstood) {
  for (const char* name :
       {"seed_cstring", "seed_cmalloc_stripped", "seed_cmalloc_pie", "seed_cmalloc_pie_stripped"}) {
    agent::GoBoundary b;
    ASSERT_TRUE(agent::FindGoBoundary(P(name).c_str(), 0, &b)) << name;
    ASSERT_TRUE(b.crossing.known()) << name;
    EXPECT_EQ(b.crossing.pushes_frame, Minor() >= 21) << name;
    const agent::GoCrossing::Site& s = b.crossing.sites[0];
    EXPECT_EQ(s.kind, agent::GoCrossing::Kind::kGoroutine);
    EXPECT_EQ(s.g_off, Minor() >= 22 ? 8 : 48) << name;
    EXPECT_EQ(s.depth_off, Minor() >= 22 ? 0 : 40) << name;
    EXPECT_GE(s.return_pc, b.asmcgocall_lo);
    EXPECT_LT(s.return_pc, b.asmcgocall_hi);
    EXPECT_GT(b.text_hi, b.text_lo);
  }
}

// Callbacks: cgocallback found, crosscall2's frame understood, in full and
// `-s -w` builds alike (crosscall2 is exported, so it stays in .dynsym).
TEST_P(GoBinaryTest, CallbackCrossingIsUnderstood) {
  agent::GoBoundary b;
  ASSERT_TRUE(agent::FindGoBoundary(P("callback").c_str(), 0, &b));
  EXPECT_GT(b.cgocallback_hi, b.cgocallback_lo);
  ASSERT_TRUE(b.callback.known());
  EXPECT_EQ(b.callback.cfa_off, Minor() >= 22 ? 0x58u : 0x50u);  // 1.22 added PUSHQ BP
  EXPECT_EQ(b.callback.rbp_off, 16u);
}

// main.main's line for each of its instructions: the same from a full build
// as from a `-s -w` build (which has no symbol table to find the text start)
// and from position-independent ones (moduledata's pointers relocated).
TEST_P(GoBinaryTest, StrippedAndPositionIndependentBuildsHaveTheSameLines) {
  std::string src = ProgramSource("seed_cmalloc");
  auto lines = [&](const std::string& path) {
    ElfImage elf;
    GoModule m;
    GoPclntab tab;
    std::string out;
    if (!elf.Open(path.c_str()) || !ReadGoModule(elf, &m) ||
        !tab.Init(m.pclntab, m.pclntab_size, m.text_start)) {
      ADD_FAILURE() << "cannot read " << path;
      return out;
    }
    tab.SetFuncData(m.gofunc, m.gofunc_size);
    GoPclntab::Func f;
    if (!tab.FindByName("main.main", &f)) {
      ADD_FAILURE() << "no main.main in " << path;
      return out;
    }
    for (uint64_t pc = f.entry; pc < f.end; ++pc) {
      GoPclntab::Frame frames[8];
      int n = tab.Frames(f, pc, frames, 8);
      if (n == 0) continue;
      EXPECT_EQ(frames[n - 1].function, "main.main");
      EXPECT_EQ(frames[n - 1].file, src);
      // Lines as they change: builds differ in instruction sizes, not in
      // the order of the lines their code comes from.
      std::string line = std::to_string(frames[n - 1].line) + " ";
      if (!out.ends_with(" " + line) && out != line) out += line;
    }
    return out;
  };
  std::string full = lines(P("seed_cmalloc"));
  EXPECT_FALSE(full.empty());
  for (const char* variant :
       {"seed_cmalloc_stripped", "seed_cmalloc_pie", "seed_cmalloc_pie_stripped"}) {
    EXPECT_EQ(full, lines(P(variant))) << variant;
  }
  EXPECT_NE(full.find(std::to_string(LineOf(src, "// CALLS-F1")) + " "), std::string::npos);
}

}  // namespace
}  // namespace cgoheap::testing
