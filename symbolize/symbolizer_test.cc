#include "symbolize/symbolizer.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "symbolize/debug_cache.h"
#include "symbolize/elf_image.h"
#include "symbolize/go_module.h"
#include "symbolize/gopclntab.h"
#include "symbolize/symbol_index.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

// The return address of the first call instruction in [start, start+size).
uint64_t FirstCallReturn(const ElfImage& elf, uint64_t start, uint64_t size) {
  ElfSection text;
  if (!elf.FindSection(".text", &text) || start < text.addr) return 0;
  const uint8_t* code = text.data + (start - text.addr);
  for (uint64_t i = 0; i + 5 <= size; ++i) {
    if (code[i] == 0xe8) return start + i + 5;
  }
  return 0;
}

// The cgo wrapper of f1 is named _cgo_<hash>_Cfunc_f1.
bool FindWrapper(const ElfImage& elf, std::string* name, uint64_t* start, uint64_t* size) {
  ElfSection text;
  if (!elf.FindSection(".text", &text)) return false;
  SymbolIndex symbols = SymbolIndex::FromElf(elf);
  for (uint64_t a = text.addr; a < text.addr + text.size; a += 16) {
    std::string_view n = symbols.Find(a);
    if (n.starts_with("_cgo_") && n.ends_with("_Cfunc_f1")) {
      *name = std::string(n);
      return elf.FindSymbol(*name, start, size);
    }
  }
  return false;
}

TEST(SymbolizerTest, InlinedCFunctionGetsItsLineAndTheWrapper) {
  std::string exe = testing::Program("seed_cmalloc");
  ElfImage elf;
  ASSERT_TRUE(elf.Open(exe.c_str()));
  std::string wrapper;
  uint64_t start = 0, size = 0;
  ASSERT_TRUE(FindWrapper(elf, &wrapper, &start, &size));
  uint64_t ret = FirstCallReturn(elf, start, size);  // the call to malloc
  ASSERT_NE(ret, 0u);
  ObjectCache cache;
  ObjectFile* obj = cache.Get(exe);
  EXPECT_FALSE(obj->build_id().empty());
  std::vector<SymbolizedFrame> frames;
  obj->Symbolize(ret - 1, &frames);
  ASSERT_EQ(frames.size(), 2u);
  std::string src = testing::ProgramSource("seed_cmalloc");
  EXPECT_EQ(frames[0].function, "f1");
  EXPECT_EQ(frames[0].file, src);
  EXPECT_EQ(frames[0].line, static_cast<uint32_t>(testing::LineOf(src, "// CLEAK")));
  EXPECT_FALSE(frames[0].go);
  EXPECT_EQ(frames[1].function, wrapper);
  EXPECT_TRUE(frames[1].file.ends_with("cgo-gcc-prolog")) << frames[1].file;
}

// The line of the malloc call in leaklib's fill(), as symbolized from the
// library at `path` (0 when no debug information was found for it).
uint32_t LeaklibLine(const std::string& path) {
  ElfImage elf;
  if (!elf.Open(path.c_str())) return 0;
  uint64_t start = 0, size = 0;
  if (!elf.FindSymbol("fill", &start, &size)) return 0;
  uint64_t ret = FirstCallReturn(elf, start, size);  // the call to malloc
  if (ret == 0) return 0;
  ObjectCache cache;
  std::vector<SymbolizedFrame> frames;
  cache.Get(path)->Symbolize(ret - 1, &frames);
  return frames.empty() ? 0 : frames[0].line;
}

// Takes DEBUGINFOD_URLS out of the environment while it lives (Debian sets
// it in login shells): these tests must not ask servers over the network.
class NoDebuginfodServers {
 public:
  NoDebuginfodServers() {
    if (const char* urls = getenv("DEBUGINFOD_URLS"); urls != nullptr) {
      saved_ = urls;
      had_ = true;
      unsetenv("DEBUGINFOD_URLS");
    }
  }
  ~NoDebuginfodServers() {
    if (had_) setenv("DEBUGINFOD_URLS", saved_.c_str(), 1);
  }

 private:
  std::string saved_;
  bool had_ = false;
};

// Distribution packages keep their debug information in separate files,
// found by the debug link the stripped object carries: beside the object or
// in .debug/ beside it (and by build id under /usr/lib/debug). cgoheap looks
// for them itself before it lets libdw search (see FindDebuginfo).
TEST(SymbolizerTest, SeparateDebugFilesAreFoundByTheirDebugLink) {
  NoDebuginfodServers offline;
  const std::string lib = testing::ProgramsDir() + "/libleaklib.so";
  const uint32_t want =
      static_cast<uint32_t>(testing::LineOf(testing::ProgramsSrc() + "/dlopen/leaklib.c", "// LEAK"));
  ASSERT_EQ(LeaklibLine(lib), want);
  for (std::string where : {"", ".debug/"}) {
    testing::TempDir d;
    const std::string stripped = d.path() + "/libx.so";
    const std::string debug = d.path() + "/" + where + "libx.so.debug";
    std::filesystem::create_directories(d.path() + "/" + where);
    std::filesystem::copy_file(lib, stripped);
    auto run = [](const std::vector<std::string>& argv) {
      testing::RunResult r = testing::RunProcess(argv);
      EXPECT_EQ(r.exit_code, 0) << argv[0] << ": " << r.err;
    };
    run({"objcopy", "--only-keep-debug", stripped, debug});
    run({"objcopy", "--strip-debug", "--add-gnu-debuglink=" + debug, stripped});
    EXPECT_EQ(LeaklibLine(stripped), want) << "debug file in " << (where.empty() ? "the same directory" : where);
    std::filesystem::remove(debug);
    EXPECT_EQ(LeaklibLine(stripped), 0u) << "the test cannot tell: the line came from somewhere else";
  }
}

// Sets CGOHEAP_CACHE_DIR while it lives.
class ScopedCacheDir {
 public:
  explicit ScopedCacheDir(const std::string& dir) {
    if (const char* was = getenv("CGOHEAP_CACHE_DIR"); was != nullptr) saved_ = was, had_ = true;
    setenv("CGOHEAP_CACHE_DIR", dir.c_str(), 1);
  }
  ~ScopedCacheDir() {
    if (had_) {
      setenv("CGOHEAP_CACHE_DIR", saved_.c_str(), 1);
    } else {
      unsetenv("CGOHEAP_CACHE_DIR");
    }
  }

 private:
  std::string saved_;
  bool had_ = false;
};

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> CachedCopies(const std::string& cache) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(cache + "/debug")) return out;
  for (const auto& e : std::filesystem::directory_iterator(cache + "/debug")) {
    if (e.path().extension() == ".elf") out.push_back(e.path());
  }
  return out;
}

// An object whose debug sections are compressed (as Go's linker writes every
// binary) is symbolized from an uncompressed copy in the cache, made the
// first time and found the next; a copy that is not whole is made again;
// with the cache off the original is read as before. The lines are the same
// every time.
TEST(SymbolizerTest, CompressedDebugSectionsAreReadFromACachedCopy) {
  testing::TempDir d;
  const std::string lib = testing::ProgramsDir() + "/libleaklib.so";
  const uint32_t want = LeaklibLine(lib);
  ASSERT_GT(want, 0u);
  const std::string compressed = d.path() + "/libz.so";
  testing::RunResult r =
      testing::RunProcess({"objcopy", "--compress-debug-sections=zlib", lib, compressed});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ScopedCacheDir cache(d.path() + "/cache");

  DebugCacheCounts before = DebugCacheCountsSoFar();
  EXPECT_EQ(LeaklibLine(compressed), want);
  DebugCacheCounts first = DebugCacheCountsSoFar();
  EXPECT_EQ(first.made, before.made + 1) << "no copy was made";
  std::vector<std::string> copies = CachedCopies(d.path() + "/cache");
  ASSERT_EQ(copies.size(), 1u);
  // The original byte for byte (but e_shoff), the inflated sections after it.
  const std::string original = FileBytes(compressed), copy = FileBytes(copies[0]);
  ASSERT_GT(copy.size(), original.size());
  const size_t shoff_at = offsetof(Elf64_Ehdr, e_shoff);
  EXPECT_EQ(copy.substr(0, shoff_at), original.substr(0, shoff_at));
  EXPECT_EQ(copy.substr(shoff_at + 8, original.size() - shoff_at - 8),
            original.substr(shoff_at + 8));
  ElfImage image;
  ASSERT_TRUE(image.Open(copies[0].c_str()));
  ElfSection info;
  ASSERT_TRUE(image.FindSection(".debug_info", &info));
  EXPECT_NE(std::string(reinterpret_cast<const char*>(info.data), 4), std::string("\x01\0\0\0", 4))
      << "still a compression header";

  EXPECT_EQ(LeaklibLine(compressed), want);
  DebugCacheCounts second = DebugCacheCountsSoFar();
  EXPECT_EQ(second.hits, first.hits + 1) << "the copy was not found again";
  EXPECT_EQ(second.made, first.made);

  std::filesystem::resize_file(copies[0], original.size() + 100);  // a torn copy
  EXPECT_EQ(LeaklibLine(compressed), want);
  EXPECT_EQ(DebugCacheCountsSoFar().made, second.made + 1) << "a torn copy was used";

  ScopedCacheDir off("");
  DebugCacheCounts last = DebugCacheCountsSoFar();
  EXPECT_EQ(LeaklibLine(compressed), want);
  EXPECT_EQ(DebugCacheCountsSoFar().made, last.made);
  EXPECT_EQ(DebugCacheCountsSoFar().hits, last.hits);
}

// A distribution's separate debug file, found by build id (libc6-dbg's for
// libc, which dev.sh installs), is read from the cached copy too: libc's
// strdup keeps its file and line.
TEST(SymbolizerTest, DistributionDebugFilesAreReadFromACachedCopy) {
  NoDebuginfodServers offline;
  Dl_info info;  // libc's own function (a sanitizer intercepts strdup)
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&gnu_get_libc_version), &info), 0);
  char real[PATH_MAX];
  ASSERT_NE(realpath(info.dli_fname, real), nullptr);
  ElfImage libc;
  ASSERT_TRUE(libc.Open(real));
  char id[128];
  ASSERT_GT(libc.BuildId(id, sizeof id), 2u);
  const std::string debug =
      std::string("/usr/lib/debug/.build-id/") + std::string(id, 2) + "/" + (id + 2) + ".debug";
  if (access(debug.c_str(), R_OK) != 0) GTEST_SKIP() << "no " << debug << " (libc6-dbg)";
  uint64_t start = 0, size = 0;
  ASSERT_TRUE(libc.FindSymbol("strdup", &start, &size) ||
              libc.FindSymbol("__strdup", &start, &size));
  testing::TempDir d;
  ScopedCacheDir cache(d.path());
  for (int round = 0; round < 2; ++round) {
    DebugCacheCounts before = DebugCacheCountsSoFar();
    ObjectCache objects;
    std::vector<SymbolizedFrame> frames;
    objects.Get(real)->Symbolize(start + 4, &frames);
    ASSERT_FALSE(frames.empty());
    EXPECT_TRUE(frames[0].file.ends_with("strdup.c")) << frames[0].file;
    // libdw maps the file it reads the DWARF from: the copy, not the original.
    const std::string maps = FileBytes("/proc/self/maps");
    EXPECT_NE(maps.find(d.path() + "/debug/"), std::string::npos) << maps;
    EXPECT_EQ(maps.find(debug), std::string::npos) << "libdw read " << debug << " itself";
    DebugCacheCounts after = DebugCacheCountsSoFar();
    if (round == 0) {
      EXPECT_EQ(after.made, before.made + 1) << "no copy of " << debug;
    } else {
      EXPECT_EQ(after.hits, before.hits + 1) << "the copy of " << debug << " was not used";
    }
  }
}

// Without DEBUGINFOD_URLS, symbolizing an object without debug information
// anywhere here must not load libdebuginfod (and libcurl with its thirty
// libraries): libdw's search would, only to learn there is no server. In a
// child: this process may have loaded it already.
TEST(SymbolizerTest, NoDebuginfodClientIsLoadedWithoutServers) {
  NoDebuginfodServers offline;
  const std::string program = testing::ProgramsDir() + "/nodebug";
  if (dlopen("libdebuginfod.so.1", RTLD_LAZY | RTLD_NOLOAD) != nullptr) {
    // Only when earlier tests in this process ran with DEBUGINFOD_URLS set
    // (ctest runs each test in a process of its own).
    GTEST_SKIP() << "libdebuginfod is loaded in this process already: run this test alone";
  }
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ElfImage elf;
    uint64_t start = 0, size = 0;
    if (!elf.Open(program.c_str()) || !elf.FindSymbol("main", &start, &size)) _exit(2);
    ObjectCache cache;
    std::vector<SymbolizedFrame> frames;
    cache.Get(program)->Symbolize(start + 1, &frames);
    if (frames.empty() || frames[0].function != "main") _exit(3);
    _exit(dlopen("libdebuginfod.so.1", RTLD_LAZY | RTLD_NOLOAD) == nullptr ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: libdebuginfod was loaded; 2, 3: nodebug's main not found";
}

TEST(SymbolizerTest, GoFramesComeFromPclntabInBothMappingForms) {
  std::string exe = testing::Program("seed_cmalloc_stripped");
  ElfImage elf;
  ASSERT_TRUE(elf.Open(exe.c_str()));
  GoModule module;
  GoPclntab tab;
  ASSERT_TRUE(ReadGoModule(elf, &module));
  ASSERT_TRUE(tab.Init(module.pclntab, module.pclntab_size, module.text_start));
  GoPclntab::Func main_main;
  ASSERT_TRUE(tab.FindByName("main.main", &main_main));
  uint64_t vaddr, offset, filesz;
  ASSERT_TRUE(elf.ExecSegment(&vaddr, &offset, &filesz));
  std::string src = testing::ProgramSource("seed_cmalloc");
  char ring_form[512], proc_form[512];
  snprintf(ring_form, sizeof ring_form, "%lx %lx %lx %s\n", vaddr, vaddr + filesz, offset,
           exe.c_str());
  snprintf(proc_form, sizeof proc_form, "%lx-%lx r-xp %08lx 08:01 1234   %s\n", vaddr,
           vaddr + filesz, offset, exe.c_str());
  ObjectCache cache;
  for (const char* maps : {ring_form, proc_form}) {
    ProcessSymbolizer sym(&cache);
    sym.SetMappings(maps);
    EXPECT_TRUE(sym.Covers(main_main.entry));
    std::vector<SymbolizedFrame> frames;
    ASSERT_TRUE(sym.Symbolize(main_main.entry, /*return_address=*/false, &frames)) << maps;
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].function, "main.main");
    EXPECT_EQ(frames[0].file, src);
    EXPECT_EQ(frames[0].line, static_cast<uint32_t>(testing::LineOf(src, "func main()")));
    EXPECT_TRUE(frames[0].go);
    frames.clear();
    EXPECT_FALSE(sym.Symbolize(0x10, true, &frames));
  }
}

}  // namespace
}  // namespace cgoheap
