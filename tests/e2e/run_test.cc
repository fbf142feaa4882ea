// `cgoheap run` on real cgo programs: the seed article's four cases and more,
// checked to the byte, the block and the file:line.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "client/ring_reader.h"
#include "common/escape.h"
#include "symbolize/elf_image.h"
#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

using google::protobuf::Value;

struct Report {
  RunResult run;
  Value doc;
  std::string json;
  const Value& leaks() const { return doc.struct_value().fields().at("leaks"); }
  int num_leaks() const { return leaks().list_value().values_size(); }
  const Value& leak(int i) const { return leaks().list_value().values(i); }
};

double Num(const Value& v, const std::string& name) { return Field(v, name).number_value(); }
std::string Str(const Value& v, const std::string& name) { return Field(v, name).string_value(); }

struct FrameRef {
  std::string function, file;
  int line = 0;
};

std::vector<FrameRef> Frames(const Value& leak) {
  std::vector<FrameRef> out;
  for (const Value& f : Field(leak, "frames").list_value().values()) {
    out.push_back({Str(f, "function"), Str(f, "file"), static_cast<int>(Num(f, "line"))});
  }
  return out;
}

// Index of the first frame with this function, or -1.
int FindFrame(const std::vector<FrameRef>& frames, const std::string& function) {
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].function == function) return static_cast<int>(i);
  }
  return -1;
}

Report RunUnder(const std::string& program, const std::vector<std::string>& args = {},
                const std::vector<std::string>& flags = {},
                const std::vector<std::string>& env = {}) {
  TempDir dir;
  std::string report_path = dir.path() + "/report.json";
  std::vector<std::string> argv = {BinDir() + "/cgoheap", "run", "--json",
                                   "--report=" + report_path};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("--");
  argv.push_back(program);
  argv.insert(argv.end(), args.begin(), args.end());
  Report r;
  r.run = RunProcess(argv, env);
  r.json = ReadFile(report_path);
  EXPECT_FALSE(r.json.empty()) << "no report; stderr:\n" << r.run.err;
  if (!r.json.empty()) r.doc = ParseJson(r.json);
  return r;
}

void ExpectFrameAt(const std::vector<FrameRef>& frames, const std::string& function,
                   const std::string& file, int line) {
  int i = FindFrame(frames, function);
  ASSERT_GE(i, 0) << "no frame " << function;
  EXPECT_EQ(frames[i].file, file) << function;
  EXPECT_EQ(frames[i].line, line) << function;
}

// The cases every user tries first, run on every Go release the machine
// has, each program built with that release (tests/CMakeLists.txt): the
// crossing from C into Go, .gopclntab and inlining all differ by release.
class CgoProgramTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string P(const std::string& name) const { return ProgramFor(GetParam(), name); }
};

INSTANTIATE_TEST_SUITE_P(Go, CgoProgramTest, ::testing::ValuesIn(GoReleases()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return GoTestSuffix(info.param);
                         });

TEST_P(CgoProgramTest, SeedCStringLeakReachesTheGoLine) {
  std::string src = ProgramSource("seed_cstring");
  Report r = RunUnder(P("seed_cstring"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  ASSERT_EQ(r.num_leaks(), 1) << r.run.err;
  const Value& leak = r.leak(0);
  EXPECT_EQ(Str(leak, "kind"), "exit");
  EXPECT_EQ(Num(leak, "bytes"), 17);
  EXPECT_EQ(Num(leak, "blocks"), 1);
  EXPECT_EQ(Num(leak, "processes"), 1);
  std::vector<FrameRef> frames = Frames(leak);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames[0].function, "malloc");
  int cstring = FindFrame(frames, "main._Cfunc_CString");
  int main_main = FindFrame(frames, "main.main");
  ASSERT_GE(cstring, 0);
  ASSERT_GT(main_main, cstring);
  ExpectFrameAt(frames, "main.main", src, LineOf(src, "// LEAK: 17 bytes"));
  EXPECT_EQ(Num(leak, "user_frame"), main_main);
  EXPECT_GT(Num(r.doc, "hidden"), 0);  // runtime thread TLS, the stdio buffer
  // The crossing leaves no junk frame, and nothing was cut short.
  for (const FrameRef& f : frames) EXPECT_NE(f.function, "??") << r.json;
  EXPECT_EQ(FindFrame(frames, "runtime.goexit"), static_cast<int>(frames.size()) - 1) << r.json;
  EXPECT_EQ(Num(r.doc, "unwind_failures"), 0);
  EXPECT_EQ(Num(r.doc, "go_crossing_unknown"), 0);
}

// The seed article's 2nd and 3rd programs leak the same two blocks: 128 MiB
// malloced by C function f1 and a 17-byte C.CString. Ours keep the 128 MiB
// in a C global (else gcc -O2 drops the allocation): at exit it is still
// reachable, and comes after the lost C.CString. Returns the frames of the
// 128 MiB leak, the second.
std::vector<FrameRef> ExpectSeedLeaks(const Report& r, const std::string& src) {
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  if (r.num_leaks() != 2) {
    ADD_FAILURE() << "2 leaks expected: " << r.json;
    return {};
  }
  EXPECT_EQ(Num(r.leak(0), "bytes"), 17);  // lost first
  EXPECT_EQ(Num(r.leak(0), "blocks"), 1);
  EXPECT_EQ(Num(r.leak(0), "reachable_blocks"), 0) << r.json;
  ExpectFrameAt(Frames(r.leak(0)), "main.main", src, LineOf(src, "// LEAK: 17 bytes"));
  EXPECT_EQ(Num(r.leak(1), "bytes"), 134217728);
  EXPECT_EQ(Num(r.leak(1), "blocks"), 1);
  EXPECT_EQ(Num(r.leak(1), "reachable_bytes"), 134217728) << r.json;
  EXPECT_EQ(Num(r.leak(1), "scanned_processes"), 1);
  std::vector<FrameRef> frames = Frames(r.leak(1));
  ExpectFrameAt(frames, "f1", src, LineOf(src, "// CLEAK"));
  return frames;
}

TEST_P(CgoProgramTest, SeedCMallocLeakHasTheCLineAndTheGoCaller) {
  std::string src = ProgramSource("seed_cmalloc");
  Report r = RunUnder(P("seed_cmalloc"));
  std::vector<FrameRef> frames = ExpectSeedLeaks(r, src);
  // f1 is the allocator's caller, and inlined into cgo's wrapper: both
  // frames are shown.
  ASSERT_GE(frames.size(), 3u);
  EXPECT_EQ(frames[1].function, "f1");
  EXPECT_EQ(frames[2].function.rfind("_cgo_", 0), 0u) << frames[2].function;
  ExpectFrameAt(frames, "main.main", src, LineOf(src, "// CALLS-F1"));
  EXPECT_EQ(Num(r.leak(1), "user_frame"), 1);
}

TEST_P(CgoProgramTest, SeedThreadLeakHasNoGoFramesToInvent) {
  std::string src = ProgramSource("seed_thread");
  std::vector<FrameRef> frames = ExpectSeedLeaks(RunUnder(P("seed_thread")), src);
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames[1].function, "f1");
  for (const FrameRef& f : frames) {
    EXPECT_EQ(f.function.find("main."), std::string::npos) << f.function;
    EXPECT_EQ(f.function.find("runtime."), std::string::npos) << f.function;
  }
  EXPECT_GE(FindFrame(frames, "start_thread"), 0);
}

// tests/programs/reachable's five leaks, in order, each lost or reachable.
void ExpectLostAndReachable(const std::string& src, const Report& r) {
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(Num(r.doc, "scanned"), 1) << r.json;
  EXPECT_EQ(Num(r.doc, "not_scanned"), 0) << r.json;
  struct Expected {
    const char* marker;
    double bytes, blocks, reachable_bytes, indirect_blocks;
  };
  // The list's head is lost; its other nodes, only the head pointed to.
  const Expected expected[] = {
      {"// LOST-LIST: 4 x 16 bytes", 64, 4, 0, 3}, {"// LOST-GO: 5 x 5 bytes", 25, 5, 0, 0},
      {"// INTERIOR: 64 bytes", 64, 1, 64, 0},     {"// REACHABLE: 3 x 16 bytes", 48, 3, 48, 0},
      {"// GO-GLOBAL: 11 bytes", 11, 1, 11, 0},
  };
  ASSERT_EQ(r.num_leaks(), static_cast<int>(std::size(expected))) << r.json;
  for (int i = 0; i < r.num_leaks(); ++i) {
    const Expected& e = expected[i];
    const Value& leak = r.leak(i);
    const std::vector<FrameRef> frames = Frames(leak);
    const int line = LineOf(src, e.marker);
    EXPECT_TRUE(std::any_of(frames.begin(), frames.end(),
                            [&](const FrameRef& f) { return f.file == src && f.line == line; }))
        << e.marker << " expected as leak " << i << ": " << r.json;
    EXPECT_EQ(Num(leak, "bytes"), e.bytes) << e.marker;
    EXPECT_EQ(Num(leak, "blocks"), e.blocks) << e.marker;
    EXPECT_EQ(Num(leak, "reachable_bytes"), e.reachable_bytes) << e.marker;
    EXPECT_EQ(Num(leak, "reachable_blocks"), e.reachable_bytes == 0 ? 0 : e.blocks) << e.marker;
    EXPECT_EQ(Num(leak, "indirect_blocks"), e.indirect_blocks) << e.marker;
    EXPECT_EQ(Num(leak, "indirect_bytes"), e.indirect_blocks * 16) << e.marker;
    EXPECT_EQ(Num(leak, "scanned_processes"), 1) << e.marker;
  }
}

// The exit scan (client/exit_scan.h) tells lost blocks from those the
// program still pointed to, on every release: a list whose head was
// dropped is lost whole, as are C strings whose Go variables died; a cache
// in a C global, a block known by a pointer into its middle, and a C string
// kept in a Go global are still reachable. Lost ones come first; --lost
// leaves the others out, counted. The same when another thread ends the
// process while the main thread waits in C on a frame of stale words
// ("parked": the main thread's frames are then no root).
TEST_P(CgoProgramTest, LostAndReachableAreToldApart) {
  const std::string src = ProgramSource("reachable");
  for (const std::vector<std::string>& args : {std::vector<std::string>{}, {"parked"}}) {
    SCOPED_TRACE(args.empty() ? "" : args[0]);
    ExpectLostAndReachable(src, RunUnder(P("reachable"), args));
  }

  Report lost = RunUnder(P("reachable"), {}, {"--lost"});
  ASSERT_EQ(lost.num_leaks(), 2) << lost.json;
  EXPECT_EQ(Num(lost.leak(0), "bytes"), 64);
  EXPECT_EQ(Num(lost.leak(1), "bytes"), 25);
  EXPECT_EQ(Num(lost.doc, "reachable_hidden"), 3) << lost.json;
  EXPECT_EQ(Num(lost.doc, "reachable_hidden_bytes"), 64 + 48 + 11);
  EXPECT_EQ(Num(lost.doc, "reachable_hidden_blocks"), 5);

  const std::string summary =
      "(scanned at exit: definitely lost 41 bytes in 6 blocks, nothing pointed to them; indirectly "
      "lost 48 bytes in 3 blocks, only lost blocks pointed to them; still reachable 123 bytes in 5 "
      "blocks";
  RunResult text = RunProcess({BinDir() + "/cgoheap", "run", "--", P("reachable")});
  EXPECT_NE(text.err.find("64 bytes in 1 block never freed (3 of 5 leaks) [still reachable at exit]"),
            std::string::npos)
      << text.err;
  EXPECT_NE(text.err.find("64 bytes in 4 blocks never freed (1 of 5 leaks) [indirectly lost: 48 "
                          "bytes in 3 blocks]"),
            std::string::npos)
      << text.err;
  EXPECT_NE(text.err.find(summary), std::string::npos) << text.err;

  // Not scanned: every block is just never freed, as before the scan.
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--exit-scan=false"}, {"--sample-bytes=1"}}) {
    Report plain = RunUnder(P("reachable"), {}, flags);
    EXPECT_EQ(Num(plain.doc, "scanned"), 0) << flags[0];
    EXPECT_EQ(Num(plain.doc, "not_scanned"), 0) << flags[0];
    for (int i = 0; i < plain.num_leaks(); ++i) {
      EXPECT_EQ(Num(plain.leak(i), "reachable_blocks"), 0) << flags[0] << ": " << plain.json;
    }
  }
}

// AddressSanitizer's runtime must be the first library a program loads, and
// its malloc is the one found first: the agent can stand neither before nor
// after it. cgoheap run says so before it runs the program (which would
// only print ASan's own complaint), and exits 2.
TEST(RunTest, AnAddressSanitizerProgramIsRefusedWithTheReason) {
  RunResult r = RunProcess({BinDir() + "/cgoheap", "run", "--", Program("asan")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.out, "") << "the program ran";
  EXPECT_NE(r.err.find(Program("asan") + " is built with AddressSanitizer (it loads libasan.so"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("Build it without AddressSanitizer"), std::string::npos) << r.err;
  // Plain, it runs.
  EXPECT_EQ(RunProcess({Program("asan")}).out, "ran\n");
}

TEST_P(CgoProgramTest, SeedPprofServerStoppedWithInterruptReportsItsLeaks) {
  std::string src = ProgramSource("seed_pprof");
  TempDir dir;
  std::string report_path = dir.path() + "/report.json";
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // a process group of its own, like a terminal job
    dup2(out[1], 1);
    close(out[0]);
    execl((BinDir() + "/cgoheap").c_str(), "cgoheap", "run", "--json",
          ("--report=" + report_path).c_str(), "--", P("seed_pprof").c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string printed;
  char c;
  while (printed.find("READY") == std::string::npos && read(out[0], &c, 1) == 1) printed += c;
  ASSERT_NE(printed.find("READY"), std::string::npos);
  kill(-pid, SIGINT);  // ^C: the launcher ignores it, the program dies of it
  int status = 0;
  waitpid(pid, &status, 0);
  close(out[0]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  Value doc = ParseJson(ReadFile(report_path));
  const auto& leaks = Field(doc, "leaks").list_value();
  ASSERT_EQ(leaks.values_size(), 2);
  // Killed by a signal, it was still scanned at its exit: the C string
  // lost, the 128 MiB kept in a C global.
  EXPECT_EQ(Num(doc, "scanned"), 1);
  EXPECT_EQ(Num(leaks.values(0), "bytes"), 17);
  EXPECT_EQ(Num(leaks.values(0), "reachable_bytes"), 0);
  ExpectFrameAt(Frames(leaks.values(0)), "main.main", src, LineOf(src, "// LEAK: 17 bytes"));
  EXPECT_EQ(Num(leaks.values(1), "bytes"), 134217728);
  EXPECT_EQ(Num(leaks.values(1), "reachable_bytes"), 134217728);
  ExpectFrameAt(Frames(leaks.values(1)), "f1", src, LineOf(src, "// CLEAK"));
}

TEST_P(CgoProgramTest, ProgramThatFreesEverythingHasNoLeak) {
  Report r = RunUnder(P("noleak"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "total 7890\n");
  EXPECT_EQ(r.num_leaks(), 0) << r.run.err;
  EXPECT_EQ(Num(r.doc, "dropped_events"), 0);
}

TEST_P(CgoProgramTest, ConcurrentGoroutinesLeakAnExactCount) {
  std::string src = ProgramSource("goroutines");
  const int workers = 8, iterations = 5000;
  Report r = RunUnder(P("goroutines"), {std::to_string(workers), std::to_string(iterations)});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  const int expected_blocks = workers * (iterations / 100);
  EXPECT_EQ(r.run.out, "leaked " + std::to_string(expected_blocks) + "\n");
  ASSERT_EQ(r.num_leaks(), 1) << r.run.err;
  EXPECT_EQ(Num(r.leak(0), "blocks"), expected_blocks);
  EXPECT_EQ(Num(r.leak(0), "bytes"), expected_blocks * 48);
  std::vector<FrameRef> frames = Frames(r.leak(0));
  ExpectFrameAt(frames, "main.worker", src, LineOf(src, "// LEAK: 48 bytes"));
  EXPECT_EQ(frames[1].function, "make_buffer");
  EXPECT_EQ(Num(r.doc, "dropped_events"), 0);
}

// A leaking helper inlined into its caller (on Go 1.21 and later; not on
// 1.19): each inlined function is a frame of its own with its own line, and
// the caller keeps the line of the call.
TEST_P(CgoProgramTest, InlinedGoCallsAreFramesOfTheirOwn) {
  std::string src = ProgramSource("inlined");
  Report r = RunUnder(P("inlined"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "leaked 1000\n");
  ASSERT_EQ(r.num_leaks(), 1) << r.json;
  EXPECT_EQ(Num(r.leak(0), "blocks"), 1000);
  EXPECT_EQ(Num(r.leak(0), "bytes"), 12000);
  std::vector<FrameRef> frames = Frames(r.leak(0));
  int helper = FindFrame(frames, "main.leakOne"), caller = FindFrame(frames, "main.batch");
  ASSERT_GE(helper, 0) << r.json;
  EXPECT_EQ(caller, helper + 1) << r.json;
  ExpectFrameAt(frames, "main.leakOne", src, LineOf(src, "// LEAK: 12 bytes"));
  ExpectFrameAt(frames, "main.batch", src, LineOf(src, "// CALLS leakOne"));
  EXPECT_EQ(Num(r.doc, "unwind_failures"), 0);
}

// One C function called from one Go helper at the same depth of the same
// goroutine's stack by different Go callers, by a recursion of varying
// depth, and by short-lived goroutines that reuse each other's g and stack
// (tests/programs/samedepth): the stacks differ only in their Go frames,
// and each path's leak must have its own, exactly. (The agent caches whole
// stacks per thread: a cache that took one path for another fails here.)
TEST_P(CgoProgramTest, StacksThatDifferOnlyInTheirGoFramesAreNeverMixedUp) {
  std::string src = ProgramSource("samedepth");
  const int workers = 4, iterations = 300;
  Report r = RunUnder(P("samedepth"), {std::to_string(workers), std::to_string(iterations)});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "leaked " + std::to_string(workers * iterations * 3 + iterations) + "\n");
  struct Path {
    int size, blocks;
    std::vector<std::pair<std::string, std::string>> callers;  // after main.leakVia, in order
  };
  const std::vector<Path> paths = {
      {101, workers * iterations, {{"main.fromA", "// A-CALLS"}}},
      {202, workers * iterations, {{"main.fromB", "// B-CALLS"}}},
      {311, workers * iterations / 3, {{"main.deep", "// DEEP-LEAKS"}}},
      {312, workers * iterations / 3,
       {{"main.deep", "// DEEP-LEAKS"}, {"main.deep", "// DEEP-RECURSES"}}},
      {313, workers * iterations / 3,
       {{"main.deep", "// DEEP-LEAKS"}, {"main.deep", "// DEEP-RECURSES"},
        {"main.deep", "// DEEP-RECURSES"}}},
      {404, iterations / 2, {{"main.shortA", "// SHORT-A-CALLS"}}},
      {505, iterations / 2, {{"main.shortB", "// SHORT-B-CALLS"}}},
  };
  ASSERT_EQ(r.num_leaks(), static_cast<int>(paths.size())) << r.json;
  for (const Path& p : paths) {
    SCOPED_TRACE(p.size);
    const Value* leak = nullptr;
    for (int i = 0; i < r.num_leaks(); ++i) {
      if (Num(r.leak(i), "bytes") == p.size * p.blocks && Num(r.leak(i), "blocks") == p.blocks) {
        leak = &r.leak(i);
      }
    }
    ASSERT_NE(leak, nullptr) << r.json;
    std::vector<FrameRef> frames = Frames(*leak);
    int via = FindFrame(frames, "main.leakVia");
    ASSERT_GE(via, 2) << r.json;
    EXPECT_EQ(frames[0].function, "malloc");
    ExpectFrameAt(frames, "keep", src, LineOf(src, "// C-LEAK"));
    EXPECT_EQ(frames[via].line, LineOf(src, "// VIA-CALLS"));
    ASSERT_GT(frames.size(), via + p.callers.size()) << r.json;
    for (size_t k = 0; k < p.callers.size(); ++k) {
      const FrameRef& f = frames[via + 1 + k];
      EXPECT_EQ(f.function, p.callers[k].first) << r.json;
      EXPECT_EQ(f.file, src);
      EXPECT_EQ(f.line, LineOf(src, p.callers[k].second)) << f.function;
    }
    // Below the callers: the goroutine's own function, never another main.deep.
    EXPECT_EQ(frames[via + 1 + p.callers.size()].function.rfind("main.main.func", 0), 0u)
        << r.json;
  }
  EXPECT_EQ(Num(r.doc, "unwind_failures"), 0);
  EXPECT_EQ(Num(r.doc, "dropped_events"), 0);
}

// C calling back into Go, which leaks (tests/programs/callback): the stack
// crosses the boundary both ways as often as the program did. Expects, in
// this order, each (function, file, marker) of `path` among the leak's
// frames, and every one of them marked as the program's own code.
struct Expected {
  std::string function, file, marker;
};

void ExpectCrossings(const Report& r, int bytes, int blocks, const std::vector<Expected>& path,
                     const std::string& user_code =
                         "main module example.com/callback (the executable's build info)") {
  const Value* leak = nullptr;
  for (int i = 0; i < r.num_leaks(); ++i) {
    if (Num(r.leak(i), "bytes") == bytes * blocks) leak = &r.leak(i);
  }
  ASSERT_NE(leak, nullptr) << "no leak of " << blocks << " x " << bytes << " bytes: " << r.json;
  EXPECT_EQ(Num(*leak, "blocks"), blocks);
  EXPECT_EQ(Str(*leak, "incomplete"), "");
  std::vector<FrameRef> frames = Frames(*leak);
  std::vector<int> own;
  for (const Value& v : Field(*leak, "user_frames").list_value().values()) {
    own.push_back(static_cast<int>(v.number_value()));
  }
  size_t from = 0;
  for (const Expected& e : path) {
    int line = LineOf(e.file, e.marker);
    size_t i = from;
    while (i < frames.size() &&
           !(frames[i].function == e.function && frames[i].file == e.file && frames[i].line == line)) {
      ++i;
    }
    ASSERT_LT(i, frames.size()) << "no " << e.function << " at " << e.file << ":" << line
                                << " after frame " << from << ": " << r.json;
    EXPECT_NE(std::find(own.begin(), own.end(), static_cast<int>(i)), own.end())
        << e.function << " is not marked as the program's own code";
    from = i + 1;
  }
  EXPECT_EQ(Num(*leak, "user_frame"), own.empty() ? -1 : own[0]);
  EXPECT_EQ(Str(*leak, "user_code"), user_code);
}

// A Go library built with -buildmode=c-shared (tests/programs/golib), in a
// C program that links it and in one that loads it with dlopen, as Python's
// ctypes does: the Go runtime is the library's, found at start-up or when
// it is loaded, and each stack goes from C into the library's Go code and
// back out into the C program that called it.
TEST_P(CgoProgramTest, GoLibraryInACProgramHasItsGoFrames) {
  const std::string go = ProgramsSrc() + "/golib/main.go";
  const std::string lib = P("libgolib.so");
  // A C executable says nothing of which code is the program's.
  const std::string user_code =
      "Go code outside the standard library, and C code outside the system's libraries (no Go "
      "build information of the executable to go by: a C program, or a forwarder that did not "
      "send it)";
  {
    SCOPED_TRACE("linked");
    const std::string host = ProgramsSrc() + "/golib/golib_host.c";
    const std::string library_path = "LD_LIBRARY_PATH=" + lib.substr(0, lib.rfind('/'));
    Report r = RunUnder(Program("golib_host"), {}, {}, {library_path});
    EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
    EXPECT_EQ(r.run.out, "host done\n");
    ASSERT_EQ(r.num_leaks(), 3) << r.json;
    EXPECT_EQ(Num(r.doc, "unwind_failures"), 0);
    ExpectCrossings(r, 1000, 1, {{"main", host, "// HOST-LEAK"}}, user_code);
    ExpectCrossings(r, 48, 3,
                    {{"main.GoLeak", go, "// LEAK: 48 bytes"}, {"main", host, "// HOST-CALLS-GO"}},
                    user_code);
    ExpectCrossings(r, 21, 1,
                    {{"main.leakString", go, "// LEAK: 21 bytes"},
                     {"main", host, "// HOST-CALLS-GO"}},
                    user_code);
    // The Go release is the library's (the executable has none).
    TempDir data;
    Cgoheapd d(data.path());
    RunResult remote = RunProcess(
        {BinDir() + "/cgoheap", "run", "--server=" + d.address(), "--", Program("golib_host")},
        {library_path});
    ASSERT_EQ(remote.exit_code, 0) << remote.err;
    RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"});
    ASSERT_EQ(ps.exit_code, 0) << ps.err;
    const std::string release = "\"go_version\":\"go" + GetParam();
    const size_t at = ps.out.find(release);
    ASSERT_NE(at, std::string::npos) << ps.out;
    EXPECT_TRUE(ps.out[at + release.size()] == '.' || ps.out[at + release.size()] == '"') << ps.out;
  }
  {
    SCOPED_TRACE("dlopen");
    const std::string host = ProgramsSrc() + "/golib/golib_dlopen.c";
    Report r = RunUnder(Program("golib_dlopen"), {lib});
    EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
    EXPECT_EQ(r.run.out, "dlopen host done\n");
    ASSERT_EQ(r.num_leaks(), 2) << r.json;
    ExpectCrossings(r, 48, 2,
                    {{"main.GoLeak", go, "// LEAK: 48 bytes"}, {"main", host, "// DLOPEN-CALLS-GO"}},
                    user_code);
    ExpectCrossings(r, 21, 1,
                    {{"main.leakString", go, "// LEAK: 21 bytes"},
                     {"main", host, "// DLOPEN-CALLS-GO"}},
                    user_code);
  }
}

TEST_P(CgoProgramTest, CallbackFromACLoopHasEveryCrossing) {
  std::string go = ProgramsSrc() + "/callback/main.go", c = ProgramsSrc() + "/callback/callback.c";
  Report r = RunUnder(P("callback"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "leaked 18\n");
  ASSERT_EQ(r.num_leaks(), 3) << r.json;
  EXPECT_EQ(Num(r.doc, "unwind_failures"), 0);
  // Go -> C loop -> Go callback.
  ExpectCrossings(r, 33, 10,
                  {{"main.goLeak", go, "// LEAK: 33 bytes"},
                   {"c_loop", c, "// C-LOOP-CALLS"},
                   {"main.main", go, "// GO-CALLS-LOOP"}});
  // Go -> C -> Go -> C -> Go.
  ExpectCrossings(r, 44, 5,
                  {{"main.goLeakDeep", go, "// LEAK: 44 bytes"},
                   {"c_inner", c, "// C-INNER-CALLS"},
                   {"main.goMiddle", go, "// MIDDLE-CALLS"},
                   {"c_outer", c, "// C-OUTER-CALLS"},
                   {"main.main", go, "// GO-CALLS-OUTER"}});
  // A thread that C created: through the C frames to the thread's start.
  ExpectCrossings(r, 55, 3,
                  {{"main.goLeakFromCThread", go, "// LEAK: 55 bytes"},
                   {"thread_main", c, "// C-THREAD-CALLS"}});
  for (int i = 0; i < r.num_leaks(); ++i) {
    if (Num(r.leak(i), "bytes") == 165) {
      std::vector<FrameRef> frames = Frames(r.leak(i));
      EXPECT_GE(FindFrame(frames, "start_thread"), 0) << r.json;
      EXPECT_EQ(FindFrame(frames, "main.main"), -1) << "a C thread has no Go caller to invent";
    }
  }
}

// Every allocator entry point a C library may use, and realloc in each of
// its cases (tests/programs/allocators): each leak exact, with the entry
// point as the innermost frame, the C function that called it, and the Go
// line that called that. In exact mode, and sampled at 1 byte (every block
// sampled) with the agent's headers on sampled blocks and without them
// (CGOHEAP_HEADERS=0: the free filter, as before any allocator but glibc's).
class EntryPointTest : public ::testing::TestWithParam<std::vector<std::string>> {};

INSTANTIATE_TEST_SUITE_P(Mode, EntryPointTest,
                         ::testing::Values(std::vector<std::string>{},
                                           std::vector<std::string>{"--sample-bytes=1"},
                                           std::vector<std::string>{"--sample-bytes=1", "CGOHEAP_HEADERS=0"}),
                         [](const ::testing::TestParamInfo<std::vector<std::string>>& info) {
                           return std::string(info.param.empty()          ? "Exact"
                                              : info.param.size() == 1 ? "SampledWithHeaders"
                                                                       : "SampledWithTheFilter");
                         });

TEST_P(EntryPointTest, EveryAllocatorEntryPointIsRecordedExactly) {
  std::string src = ProgramSource("allocators");
  std::vector<std::string> flags, env;
  for (const std::string& a : GetParam()) (a.starts_with("--") ? flags : env).push_back(a);
  Report r = RunUnder(Program("allocators"), {}, flags, env);
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  // calloc(SIZE_MAX / 2, 4) overflows: it fails, and records nothing.
  EXPECT_EQ(r.run.out, "moved 1 in place 1 zero freed 1 failed 1 calloc overflow 1\n");
  struct Case {
    std::string api;
    int bytes;
    std::string libc_frame;  // between the entry point and the program's C function
    std::string function, what;
  };
  const std::vector<Case> cases = {
      {"malloc", 101, "", "leak_malloc", "malloc"},
      {"calloc", 102, "", "leak_calloc", "calloc"},
      {"realloc", 200003, "", "leak_realloc_moved", "realloc moved"},
      {"realloc", 1040, "", "leak_realloc_in_place", "realloc in place"},
      {"realloc", 105, "", "leak_realloc_null", "realloc NULL"},
      // A failed realloc leaves the block as malloc made it.
      {"malloc", 106, "", "leak_realloc_failed", "realloc failed"},
      {"reallocarray", 107, "", "leak_reallocarray", "reallocarray"},
      {"posix_memalign", 108, "", "leak_posix_memalign", "posix_memalign"},
      {"aligned_alloc", 109, "", "leak_aligned_alloc", "aligned_alloc"},
      {"memalign", 110, "", "leak_memalign", "memalign"},
      {"valloc", 111, "", "leak_valloc", "valloc"},
      {"pvalloc", 112, "", "leak_pvalloc", "pvalloc"},
      {"malloc", 113, "__strdup", "leak_strdup", "strdup"},
      {"malloc", 115, "__strndup", "leak_strndup", "strndup"},
  };
  ASSERT_EQ(r.num_leaks(), static_cast<int>(cases.size())) << r.json;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const Value* leak = nullptr;
    for (int i = 0; i < r.num_leaks(); ++i) {
      if (Num(r.leak(i), "bytes") == c.bytes) leak = &r.leak(i);
    }
    ASSERT_NE(leak, nullptr) << r.json;
    EXPECT_EQ(Num(*leak, "blocks"), 1);
    std::vector<FrameRef> frames = Frames(*leak);
    ASSERT_GE(frames.size(), 3u);
    EXPECT_EQ(frames[0].function, c.api);
    size_t own = 1;
    if (!c.libc_frame.empty()) {
      EXPECT_EQ(frames[1].function, c.libc_frame);
      own = 2;
    }
    EXPECT_EQ(frames[own].function, c.function);
    EXPECT_EQ(frames[own].file, src);
    EXPECT_EQ(frames[own].line, LineOf(src, "// C: " + c.what));
    EXPECT_EQ(Num(*leak, "user_frame"), own);
    ExpectFrameAt(frames, "main.main", src, LineOf(src, "// GO: " + c.what));
  }
}

// The same entry points allocating and freeing in a loop: no leak, and the
// agent saw every event the program made (it counts its own), beyond the
// few the Go runtime makes.
TEST(RunTest, FreesThroughEveryEntryPointLeaveNothingAndEveryEventIsSeen) {
  TempDir data;
  Report r = RunUnder(Program("allocators"), {"churn", "2000"}, {"--data=" + data.path()});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  ASSERT_EQ(r.run.out, "events 56000 bad 0\n");
  EXPECT_EQ(r.num_leaks(), 0) << r.json;
  EXPECT_EQ(Num(r.doc, "dropped_events"), 0);
  Cgoheapd d(data.path());
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"});
  Value procs = ParseJson(ps.out);
  ASSERT_EQ(Field(procs, "processes").list_value().values_size(), 1) << ps.out;
  double events = Num(Field(procs, "processes").list_value().values(0), "events");
  EXPECT_GE(events, 56000) << "the agent missed allocator events";
  EXPECT_LT(events, 56000 + 500) << "more events than the program and the Go runtime made";

  // Sampled: every free through its own path (the header test or the
  // filter, free(NULL), the frees inside realloc), at a rate that samples
  // every block (each with a header) and at the default one (where a block
  // realloc grows gains one by moving), and with the filter instead of
  // headers. Nothing leaks, and every block is as the C library promises.
  // (At a rate of 1 byte the ring fills faster than it is read, and a
  // sampled process drops an allocation's record rather than wait: its
  // free is then ignored too.)
  for (const std::string rate : {"1", "524288"}) {
    for (const std::string headers : {"", "CGOHEAP_HEADERS=0"}) {
      SCOPED_TRACE("--sample-bytes=" + rate + " " + headers);
      std::vector<std::string> env;
      if (!headers.empty()) env.push_back(headers);
      Report s = RunUnder(Program("allocators"), {"churn", "2000"}, {"--sample-bytes=" + rate}, env);
      EXPECT_EQ(s.run.exit_code, 0) << s.run.err;
      EXPECT_EQ(s.run.out, "events 56000 bad 0\n");
      EXPECT_EQ(s.num_leaks(), 0) << s.json;
      if (rate != "1") {
        EXPECT_EQ(Num(s.doc, "dropped_events"), 0);
      }
    }
  }
}

// Where glibc's allocator is next, a block the agent samples carries its
// header (bit 3 of the byte before the block: never set by glibc), and free
// tests that; nowhere else (exact mode, CGOHEAP_HEADERS=0).
TEST(RunTest, SampledBlocksCarryTheAgentsHeaderWhereGlibcIsNext) {
  const std::string program = Program("allocators");
  EXPECT_EQ(RunUnder(program, {"header"}, {"--sample-bytes=1"}).run.out, "header 1\n");
  EXPECT_EQ(RunUnder(program, {"header"}, {"--sample-bytes=1"}, {"CGOHEAP_HEADERS=0"}).run.out, "header 0\n");
  EXPECT_EQ(RunUnder(program, {"header"}).run.out, "header 0\n");
  EXPECT_EQ(RunProcess({program, "header"}).out, "header 0\n");
}

// Function names as the user's other tools show them (tests/programs/
// cppnames): C++ frames by their demangled qualified names (two classes
// with an Insert each, a templated method, an inlined method), C frames by
// their names as written, even where a name is also a C++ type's encoding
// ("re", "i": never demangled to "long double restrict", "int"), Go frames as
// Go prints them (a method with its receiver, a closure, a generic function
// as pprof shows it).
TEST_P(CgoProgramTest, FunctionsAreNamedAsGdbAndPprofNameThem) {
  std::string go = ProgramsSrc() + "/cppnames/main.go", cpp = ProgramsSrc() + "/cppnames/kv.cpp";
  Report r = RunUnder(P("cppnames"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "leaked 5\n");
  // Each expected frame is in exactly one leak, with this many bytes, at
  // the marked line, and is that leak's first frame of the program's code.
  struct Case {
    std::string function, file, marker;
    int bytes;
  };
  const std::vector<Case> cases = {
      {"kv::Table::Insert(int)", cpp, "// LEAK: Table::Insert", 16},
      {"kv::Index::Insert(int)", cpp, "// LEAK: Index::Insert", 16},
      {"void kv::Store::Put<int>(int)", cpp, "// LEAK: Store::Put", 16},
      {"kv::Table::Grow(int)", cpp, "// LEAK: Table::Grow", 32},
      {"re", go, "// LEAK: re", 20},
      {"i", go, "// LEAK: i", 21},
      {"main.(*Buffer).Fill", go, "// LEAK: method", 31},
      {"main.Keep[...]", go, "// LEAK: generic", 48},
      {"main.run.func1", go, "// LEAK: closure", 33},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.function);
    int found = 0;
    for (int i = 0; i < r.num_leaks(); ++i) {
      std::vector<FrameRef> frames = Frames(r.leak(i));
      int at = FindFrame(frames, c.function);
      if (at < 0) continue;
      ++found;
      EXPECT_EQ(Num(r.leak(i), "bytes"), c.bytes);
      EXPECT_EQ(frames[at].file, c.file);
      EXPECT_EQ(frames[at].line, LineOf(c.file, c.marker));
      EXPECT_EQ(Num(r.leak(i), "user_frame"), at);
    }
    EXPECT_EQ(found, 1) << r.json;
  }
  // Without DWARF (strip --strip-debug), the names come from the symbol
  // table, demangled just the same.
  TempDir dir;
  std::string nodebug = dir.path() + "/cppnames";
  ASSERT_EQ(RunProcess({"objcopy", "--strip-debug", P("cppnames"), nodebug}).exit_code, 0);
  Report bare = RunUnder(nodebug);
  std::set<std::string> names;
  for (int i = 0; i < bare.num_leaks(); ++i) {
    for (const FrameRef& f : Frames(bare.leak(i))) names.insert(f.function);
  }
  // (GCC's clones keep their suffix, as valgrind and perf show it:
  // "kv::Table::Insert(int) [clone .isra.0]".)
  for (std::string fn : {"kv::Table::Insert(int)", "kv::Index::Insert(int)",
                         "void kv::Store::Put<int>(int)", "main.Keep[...]"}) {
    auto it = names.lower_bound(fn);
    EXPECT_TRUE(it != names.end() && it->rfind(fn, 0) == 0) << fn << " in " << bare.json;
  }
  // A C name from the symbol table is not demangled either ("i", not "int").
  EXPECT_TRUE(names.contains("i")) << bare.json;
  EXPECT_FALSE(names.contains("int")) << bare.json;
  // The inlined method is a frame of its own, its caller keeps its line.
  for (int i = 0; i < r.num_leaks(); ++i) {
    std::vector<FrameRef> frames = Frames(r.leak(i));
    int grow = FindFrame(frames, "kv::Table::Grow(int)");
    if (grow < 0) continue;
    ASSERT_LT(grow + 1, static_cast<int>(frames.size()));
    EXPECT_EQ(frames[grow + 1].function, "kv_table_grow");
    EXPECT_EQ(frames[grow + 1].line, LineOf(cpp, "// CALLS Grow"));
  }
}

// Blocks freed on another thread than the one that allocated them, addresses
// reused across threads, and 36 threads over the run for 8 lanes (threads
// share lane 0 and give their lanes back when they exit): the per-thread
// lanes must still merge into the true order, or frees would land before
// their allocations and show thousands of blocks that were freed as leaks.
// tests/programs/handoff run as WAVES PAIRS ITEMS leaks ITEMS/1000 blocks
// of 24 bytes per pair and wave, all at one line, and nothing else.
void ExpectHandoffMatched(const Report& r, int blocks) {
  std::string src = ProgramSource("handoff");
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "leaked " + std::to_string(blocks) + "\n");
  ASSERT_EQ(r.num_leaks(), 1) << r.json;
  EXPECT_EQ(Num(r.leak(0), "blocks"), blocks);
  EXPECT_EQ(Num(r.leak(0), "bytes"), blocks * 24);
  ExpectFrameAt(Frames(r.leak(0)), "make_kept", src, LineOf(src, "// LEAK: 24 bytes"));
  EXPECT_EQ(Num(r.doc, "dropped_events"), 0);
}

TEST_P(CgoProgramTest, BlocksHandedBetweenThreadsAreMatchedExactly) {
  ExpectHandoffMatched(
      RunUnder(P("handoff"), {"6", "3", "20000"}, {}, {"CGOHEAP_RING_LANES=8"}), 360);
}

// The same order from the fallback clock (a shared counter), used where the
// kernel does not keep time with the TSC.
TEST(RunTest, BlocksHandedBetweenThreadsAreMatchedWithTheCounterClock) {
  ExpectHandoffMatched(RunUnder(Program("handoff"), {"6", "3", "20000"}, {},
                                {"CGOHEAP_RING_LANES=8", "CGOHEAP_CLOCK=counter"}),
                       360);
}

// The clock a process's events were ordered by, as `cgoheap ps --json` says.
std::string ClockOf(const std::string& data_dir) {
  Cgoheapd d(data_dir);
  Value procs = ParseJson(
      RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"}).out);
  if (Field(procs, "processes").list_value().values_size() != 1) return "?";
  return Str(Field(procs, "processes").list_value().values(0), "clock");
}

std::string CurrentClocksource() {
  std::string s = ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  return s.substr(0, s.find('\n'));
}

// The clock agent/clock_choice.h should choose on this machine with the
// kernel's clocksource `current`, from what /proc/cpuinfo says (Linux sets
// constant_tsc and nonstop_tsc from the CPU's invariant-TSC bit).
std::string ExpectedClock(const std::string& current) {
  const std::string cpu = ReadFile("/proc/cpuinfo");
  auto flag = [&](const std::string& f) { return cpu.find(" " + f + " ") != std::string::npos ||
                                                 cpu.find(" " + f + "\n") != std::string::npos; };
  if (!flag("rdtscp")) return "counter";
  if (current == "tsc") return "tsc";
  std::string available =
      " " + ReadFile("/sys/devices/system/clocksource/clocksource0/available_clocksource") + " ";
  for (char& c : available) {
    if (c == '\n') c = ' ';
  }
  const bool offered = available.find(" tsc ") != std::string::npos;
  return offered && flag("constant_tsc") && flag("nonstop_tsc") ? "tsc" : "counter";
}

// Some virtual machines hide RDTSCP even where the kernel keeps time with
// the TSC; executing it there kills the program with SIGILL. Asked for the
// TSC, the agent asks the CPU first and falls back to the counter, still
// exact.
TEST(RunTest, CpuWithoutRdtscpGetsTheCounterClockAndStaysExact) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  TempDir data;
  ExpectHandoffMatched(
      RunUnder(Program("handoff"), {"4", "3", "5000"}, {"--agent=" + agent, "--data=" + data.path()},
               {"CGOHEAP_RING_LANES=8", "CGOHEAP_TEST_NO_RDTSCP=1", "CGOHEAP_CLOCK=tsc"}),
      4 * 3 * 5);
  EXPECT_EQ(ClockOf(data.path()), "counter");

  // Asked for the TSC without the switch: the TSC exactly where the kernel
  // keeps time with it, or still offers it and the CPU says it is invariant
  // (agent/clock_choice.h). Not asked: address stripes, on any machine with
  // CMPXCHG16B.
  TempDir tsc;
  Report r = RunUnder(Program("seed_cstring"), {},
                      {"--agent=" + agent, "--data=" + tsc.path()}, {"CGOHEAP_CLOCK=tsc"});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(ClockOf(tsc.path()), ExpectedClock(CurrentClocksource()));
  TempDir plain;
  r = RunUnder(Program("seed_cstring"), {}, {"--agent=" + agent, "--data=" + plain.path()});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  const bool cx16 = ReadFile("/proc/cpuinfo").find(" cx16 ") != std::string::npos;
  EXPECT_EQ(ClockOf(plain.path()), cx16 ? "stripes" : ExpectedClock(CurrentClocksource()));
}

// A cloud VM's kernel keeps time with kvm-clock. By default that changes
// nothing (stripes need no clock). Asked for the TSC, the agent orders by it
// where the kernel still offers it and it is invariant, else by the
// counter; blocks handed between threads are matched exactly every time.
TEST(RunTest, KvmClockMachinesStillUseAnInvariantTscTheKernelOffers) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  const std::string cpu = ReadFile("/proc/cpuinfo");
  const bool invariant = cpu.find(" constant_tsc") != std::string::npos &&
                         cpu.find(" nonstop_tsc") != std::string::npos &&
                         cpu.find(" rdtscp") != std::string::npos;
  // By default every machine orders by address stripes, whatever keeps its
  // time; asked for the TSC (CGOHEAP_CLOCK=tsc), a kvm-clock machine uses
  // it where the kernel still offers it, else the counter.
  struct Case {
    std::string sources, clock, expected;
  };
  for (const Case& c : {Case{"kvm-clock;kvm-clock tsc acpi_pm", "", "stripes"},
                        Case{"kvm-clock;kvm-clock acpi_pm", "", "stripes"},
                        Case{"kvm-clock;kvm-clock tsc acpi_pm", "tsc", invariant ? "tsc" : "counter"},
                        Case{"kvm-clock;kvm-clock acpi_pm", "tsc", "counter"}}) {
    SCOPED_TRACE(c.sources + " CGOHEAP_CLOCK=" + c.clock);
    TempDir data;
    std::vector<std::string> env = {"CGOHEAP_RING_LANES=8", "CGOHEAP_TEST_CLOCKSOURCES=" + c.sources};
    if (!c.clock.empty()) env.push_back("CGOHEAP_CLOCK=" + c.clock);
    ExpectHandoffMatched(RunUnder(Program("handoff"), {"4", "3", "5000"},
                                  {"--agent=" + agent, "--data=" + data.path()}, env),
                         4 * 3 * 5);
    EXPECT_EQ(ClockOf(data.path()), c.expected);
  }
}

// A CPU without CMPXCHG16B (the shared lane's stripe keys need it) falls
// back to a clock, and blocks handed between threads still match exactly.
TEST(RunTest, WithoutCmpxchg16bAClockOrdersInstead) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  TempDir data;
  ExpectHandoffMatched(RunUnder(Program("handoff"), {"4", "3", "5000"},
                                {"--agent=" + agent, "--data=" + data.path()},
                                {"CGOHEAP_RING_LANES=8", "CGOHEAP_TEST_NO_CX16=1"}),
                       4 * 3 * 5);
  // The clock-based choice, exactly as on a CPU that never had stripes.
  EXPECT_EQ(ClockOf(data.path()), ExpectedClock(CurrentClocksource()));
}

// 80 threads at once for 64 lanes: some share lane 0 while the others write
// lanes of their own.
TEST(RunTest, MoreThreadsAtOnceThanLanesAreMatchedExactly) {
  ExpectHandoffMatched(RunUnder(Program("handoff"), {"1", "40", "10000"}), 400);
}

// A library loaded with dlopen after start-up, a leak in it, and an exit at
// once: the agent snapshots the mappings again when it first unwinds the new
// code, so the library's function and line are named although the process
// (and its /proc/PID/maps) is gone when the forwarder symbolizes. dlopen's
// own allocations are the loader's (hidden).
TEST_P(CgoProgramTest, LibraryLoadedWithDlopenIsNamedAfterTheProcessIsGone) {
  std::string lib_src = ProgramsSrc() + "/dlopen/leaklib.c";
  std::string src = ProgramSource("dlopen");
  Report r = RunUnder(P("dlopen"), {Program("libleaklib.so")});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "leaked 40\n");
  ASSERT_EQ(r.num_leaks(), 1) << r.run.err;
  EXPECT_EQ(Num(r.leak(0), "bytes"), 40);
  EXPECT_EQ(Num(r.leak(0), "blocks"), 1);
  std::vector<FrameRef> frames = Frames(r.leak(0));
  ExpectFrameAt(frames, "fill", lib_src, LineOf(lib_src, "// LEAK: 40 bytes"));
  ExpectFrameAt(frames, "main.main", src, LineOf(src, "p := C.call_make(path, 40)"));
}

// Rings on a file system too small for every thread's lane (a 64 MiB
// /dev/shm in a container is the usual case): lanes whose pages cannot be
// allocated are never used, so the program is never killed by SIGBUS for
// writing a page that cannot exist, and the report stays exact. On a real
// 6 MiB tmpfs where this machine lets the test mount one (root); CI fails
// when it is skipped (.ci/run). The test switch of the guard agent below
// covers the same path everywhere.
TEST(RunTest, RingsOnAFullFileSystemNeverCrashTheProgram) {
  TempDir dir;
  std::string small = dir.path() + "/small";
  std::filesystem::create_directories(small);
  if (mount("tmpfs", small.c_str(), "tmpfs", 0, "size=6m") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << strerror(errno)
                 << "): run as root, or in a mount namespace, to test a real full file system";
  }
  // 2 MiB lanes: the header and lane 0 take 2 MiB, so most of the 40
  // threads find no room for a lane of their own.
  Report r = RunUnder(Program("handoff"), {"1", "20", "10000"}, {"--data=" + dir.path() + "/db"},
                      {"TMPDIR=" + small});
  umount(small.c_str());
  ExpectHandoffMatched(r, 200);
}

// The same two file systems made by the guard agent's test switch, so that
// they are tested wherever the tests run: one with room for lane 0 only
// (every thread shares it), and one without fallocate at all (the ring is
// written sparse).
TEST(RunTest, RingWithRoomForLaneZeroOnlyStaysExact) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  ExpectHandoffMatched(RunUnder(Program("handoff"), {"1", "20", "10000"}, {"--agent=" + agent},
                                {"CGOHEAP_TEST_FALLOCATE=full"}),
                       200);
  // And no thread wrote a lane whose pages were not allocated: the ring of a
  // run with nobody draining it holds records in lane 0 only (and in other
  // lanes when there is room, which proves the check can tell).
  auto lanes_written = [&](const std::string& fault) {
    TempDir rings;
    std::vector<std::string> env = {"LD_PRELOAD=" + agent, "CGOHEAP_RING_DIR=" + rings.path()};
    if (!fault.empty()) env.push_back("CGOHEAP_TEST_FALLOCATE=" + fault);
    RunResult run = RunProcess({Program("handoff"), "1", "4", "1000"}, env);
    EXPECT_EQ(run.exit_code, 0) << run.err;
    std::set<uint32_t> lanes;
    for (const auto& e : std::filesystem::directory_iterator(rings.path())) {
      client::RingReader reader;
      if (!reader.Open(e.path())) continue;
      client::RingRecord rec;
      while (reader.Next(&rec)) lanes.insert(rec.lane);
    }
    return lanes;
  };
  EXPECT_EQ(lanes_written("full"), std::set<uint32_t>{0});
  EXPECT_GT(lanes_written("").size(), 1u);
}

TEST(RunTest, RingOnAFileSystemWithoutFallocateStaysExact) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  ExpectHandoffMatched(RunUnder(Program("handoff"), {"1", "20", "10000"}, {"--agent=" + agent},
                                {"CGOHEAP_TEST_FALLOCATE=unsupported"}),
                       200);
}

// On an older glibc dlsym allocates while the agent resolves the real
// allocator: those blocks come from the agent's bootstrap arena, and when
// the program frees one (a thread's dlerror buffer, at its end) the real
// free must never see it. The guard agent's CGOHEAP_TEST_BOOTSTRAP makes
// such a block and frees it once tracking runs: in every mode the program
// runs on, and its leak is reported as without it. (Sampled mode's free
// leaves the bootstrap test to its slow path; the arena's blocks are
// pinned in the sampled filter to get there.)
TEST(RunTest, BootstrapBlocksNeverReachTheRealFree) {
  const std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  for (const std::string rate : {"0", "1", "524288"}) {
    SCOPED_TRACE("--sample-bytes=" + rate);
    Report r = RunUnder(Program("seed_cstring"), {}, {"--agent=" + agent, "--sample-bytes=" + rate},
                        {"CGOHEAP_TEST_BOOTSTRAP=1"});
    EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
    if (rate == "524288") continue;  // a 17-byte block is sampled 1 time in 30,000
    ASSERT_EQ(r.num_leaks(), 1) << r.json;
    EXPECT_EQ(Num(r.leak(0), "bytes"), 17);
    EXPECT_EQ(Num(r.leak(0), "blocks"), 1);
  }
  // The agent loaded with tracking off (no ring directory).
  RunResult off = RunProcess({Program("seed_cstring")},
                             {"LD_PRELOAD=" + agent, "CGOHEAP_TEST_BOOTSTRAP=1"});
  EXPECT_EQ(off.exit_code, 0) << off.err;
}

// A fork without exec: the child starts over as a process of its own
// (AtForkChild: the parent's ring let go, the mode entered again). Untraced
// (the default, and with --trace-children=go: forks is a C program) it must
// run on, its frees sent to the real free and nothing of it reported;
// traced (--trace-children=all), exactly its own leak, not one of the thousand
// blocks it allocated and freed (in exact mode every one of their frees
// must reach the slow path again after the fork), nor the parent's block it
// freed. In exact and sampled mode (every block sampled).
TEST(RunTest, AForkedChildIsTrackedOnlyWhenAskedInEveryMode) {
  const std::string src = ProgramsSrc() + "/forks/forks.c";
  for (const std::string rate : {"0", "1"}) {
    for (bool children : {false, true}) {
      SCOPED_TRACE("--sample-bytes=" + rate + (children ? " --trace-children=all" : ""));
      std::vector<std::string> flags = {"--sample-bytes=" + rate};
      if (children) flags.push_back("--trace-children=all");
      Report r = RunUnder(Program("forks"), {}, flags);
      EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
      ASSERT_EQ(r.num_leaks(), children ? 2 : 1) << r.json;
      EXPECT_EQ(Num(r.doc, "processes"), children ? 2 : 1) << r.json;
      EXPECT_EQ(Num(r.doc, "not_followed"), children ? 0 : 1) << r.json;
      EXPECT_EQ(Num(r.doc, "not_go"), 0) << r.json;
      for (int i = 0; i < r.num_leaks(); ++i) {
        const bool child = children && i == 0;  // 222 bytes first
        SCOPED_TRACE(child ? "the child's leak" : "the parent's leak");
        EXPECT_NEAR(Num(r.leak(i), "bytes"), child ? 222 : 111, 0.001) << r.json;
        EXPECT_NEAR(Num(r.leak(i), "blocks"), 1, 0.001) << r.json;
        const std::string who = child ? "the child's" : "the parent's";
        std::vector<FrameRef> frames = Frames(r.leak(i));
        ExpectFrameAt(frames, child ? "child_leak" : "parent_leak", src, LineOf(src, "// LEAK: " + who));
        ExpectFrameAt(frames, "main", src, LineOf(src, "// CALLS: " + who));
      }
    }
  }
  // The text report says when a child was not followed, and only then.
  const std::string note =
      "(1 process the program started ran without being followed: what it allocated is not in "
      "this report; --trace-children follows those that are Go programs, --trace-children=all "
      "every one)";
  RunResult alone = RunProcess({BinDir() + "/cgoheap", "run", "--", Program("forks")});
  EXPECT_NE(alone.err.find(note), std::string::npos) << alone.err;
  RunResult both =
      RunProcess({BinDir() + "/cgoheap", "run", "--trace-children=all", "--", Program("forks")});
  EXPECT_EQ(both.err.find("without being followed"), std::string::npos) << both.err;
  EXPECT_EQ(both.err.find("not followed"), std::string::npos) << both.err;
  // Only Go children (a bare --trace-children): the C child is named.
  RunResult go_only =
      RunProcess({BinDir() + "/cgoheap", "run", "--trace-children", "--", Program("forks")});
  EXPECT_NE(go_only.err.find("(1 process the program started is not a Go program and was not "
                             "followed (forks); --trace-children=all follows them)"),
            std::string::npos)
      << go_only.err;
  EXPECT_EQ(go_only.err.find("without being followed"), std::string::npos) << go_only.err;
  Report go_json = RunUnder(Program("forks"), {}, {"--trace-children"});
  EXPECT_EQ(Num(go_json.doc, "processes"), 1) << go_json.json;
  EXPECT_EQ(Num(go_json.doc, "not_followed"), 0) << go_json.json;
  EXPECT_EQ(Num(go_json.doc, "not_go"), 1) << go_json.json;
  EXPECT_EQ(Num(Field(go_json.doc, "not_go_names"), "forks"), 1) << go_json.json;
}

// --trace-children in exact mode: a child that is a Go program is traced
// and scanned at its exit as the program itself is (the seed's two leaks,
// under a shell that runs it and goes on: one lost, one still reachable);
// with --trace-children=all a child that is not one (forks, a C program,
// and its forked child) is recorded but not traced, and the report says why.
TEST(RunTest, GoChildrenAreScannedAtTheirExitAndOtherChildrenSayWhyNot) {
  const std::vector<std::string> flags = {"--trace-children"};
  // bash forks (dash vforks): its child is bash, noted as no Go program,
  // until it execs the program, which takes the note back. And bash
  // defines getenv and setenv of its own, which the agent must not call.
  for (const std::string shell : {"/bin/sh", "/bin/bash"}) {
    SCOPED_TRACE(shell);
    Report go = RunUnder(shell, {"-c", "\"$0\"; true", Program("seed_cmalloc")}, flags);
    EXPECT_EQ(go.run.exit_code, 0) << go.run.err;
    EXPECT_EQ(Num(go.doc, "processes"), 2) << go.json;  // the shell, the program
    EXPECT_EQ(Num(go.doc, "not_scanned"), 0) << go.json;
    EXPECT_EQ(Num(go.doc, "not_go"), 0) << go.json;
    int seen = 0;
    for (const Value& l : go.leaks().list_value().values()) {
      if (FindFrame(Frames(l), "main.main") < 0) continue;  // the shell's
      if (Num(l, "bytes") == 17) {  // the C.CString: lost
        ++seen;
        EXPECT_EQ(Num(l, "reachable_blocks"), 0) << go.json;
        EXPECT_EQ(Num(l, "scanned_processes"), 1) << go.json;
      } else if (Num(l, "bytes") == 134217728) {  // held by a C global
        ++seen;
        EXPECT_EQ(Num(l, "reachable_bytes"), 134217728) << go.json;
        EXPECT_EQ(Num(l, "scanned_processes"), 1) << go.json;
      }
    }
    EXPECT_EQ(seen, 2) << go.json;
  }

  Report c = RunUnder("/bin/sh", {"-c", "\"$0\"; true", Program("forks")}, {"--trace-children=all"});
  EXPECT_EQ(c.run.exit_code, 0) << c.run.err;
  EXPECT_EQ(Num(c.doc, "not_scanned"), 2) << c.json;  // forks and its child
  const auto& why = Field(c.doc, "not_scanned_reasons").list_value();
  ASSERT_EQ(why.values_size(), 1) << c.json;  // the same reason, once
  EXPECT_EQ(why.values(0).string_value().rfind("only the children that are Go programs", 0), 0u)
      << c.json;
}

// `cgoheap run -- go run .` and `-- go test`: the go command builds the
// program and runs it as its child. What is reported is that program, whole
// and scanned at its exit, with its C functions named and placed (the go
// command is asked to keep the symbols its -s -w would drop, unless the user
// gave -ldflags), and nothing of the go command or the C compilers it runs;
// --trace-children=none asks for the go command alone, which (a static
// binary) the agent never starts in, and the error says where it did.
TEST(RunTest, GoRunAndGoTestReportTheProgramNotTheToolchain) {
  const std::vector<std::string> env = {"GOCACHE=" CGOHEAP_GOCACHE, "GOPATH=" CGOHEAP_GOPATH,
                                        "GOTOOLCHAIN=local", "GOENV=off",
                                        "GOFLAGS=-buildvcs=false", "GOROOT="};
  const std::string main_go = ProgramsSrc() + "/seed_cmalloc/main.go";
  const std::string cgoheap = BinDir() + "/cgoheap";
  TempDir dir;
  const std::string report_path = dir.path() + "/report.json";
  RunResult run = RunProcess({cgoheap, "run", "--json", "--report=" + report_path, "--",
                              CGOHEAP_GO_BIN, "run", main_go},
                             env, std::chrono::seconds(300));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("cgoheap run: `go run` builds the program and runs it as its child: "
                         "following the Go programs it runs, not the go command "
                         "(--trace-children=go); linked with GOFLAGS+="),
            std::string::npos)
      << run.err;
  const std::string json = ReadFile(report_path);
  ASSERT_FALSE(json.empty()) << run.err;
  Value doc = ParseJson(json);
  EXPECT_EQ(Num(doc, "processes"), 1) << json;
  EXPECT_EQ(Num(doc, "not_scanned"), 0) << json;
  const auto& leaks = Field(doc, "leaks").list_value();
  ASSERT_EQ(leaks.values_size(), 2) << json;
  const Value& lost = leaks.values(0);  // the C.CString: lost comes first
  EXPECT_EQ(Num(lost, "bytes"), 17) << json;
  EXPECT_EQ(Num(lost, "reachable_blocks"), 0) << json;
  EXPECT_EQ(Num(lost, "scanned_processes"), 1) << json;
  ExpectFrameAt(Frames(lost), "main.main", main_go, LineOf(main_go, "// LEAK: 17 bytes"));
  const Value& held = leaks.values(1);  // by a C global
  EXPECT_EQ(Num(held, "bytes"), 134217728) << json;
  EXPECT_EQ(Num(held, "reachable_bytes"), 134217728) << json;
  ExpectFrameAt(Frames(held), "main.main", main_go, LineOf(main_go, "// CALLS-F1"));
  ExpectFrameAt(Frames(held), "f1", main_go, LineOf(main_go, "// CLEAK"));

  // The user's own -ldflags win: the go command's -s -w stays, f1 unnamed.
  Report own = RunUnder(CGOHEAP_GO_BIN, {"run", "-ldflags=-X=main.unused=1", main_go}, {}, env);
  EXPECT_EQ(own.run.exit_code, 0) << own.run.err;
  EXPECT_EQ(own.run.err.find("linked with"), std::string::npos) << own.run.err;
  ASSERT_EQ(own.num_leaks(), 2) << own.json;
  EXPECT_LT(FindFrame(Frames(own.leak(1)), "f1"), 0) << own.json;
  ExpectFrameAt(Frames(own.leak(1)), "main.main", main_go, LineOf(main_go, "// CALLS-F1"));

  RunResult go_command = RunProcess({cgoheap, "run", "--trace-children=none", "--",
                                     CGOHEAP_GO_BIN, "run", main_go},
                                    env, std::chrono::seconds(300));
  EXPECT_EQ(go_command.exit_code, 0) << go_command.err;
  EXPECT_EQ(go_command.err.find("LEAK SUMMARY"), std::string::npos) << go_command.err;
  EXPECT_NE(go_command.err.find(" was not recorded: the agent did not start in it, but in "),
            std::string::npos)
      << go_command.err;
  EXPECT_NE(go_command.err.find(" it started (--trace-children follows those that are Go "
                               "programs, --trace-children=all every one)."),
            std::string::npos)
      << go_command.err;

  // Another subcommand runs no program of the user's: they are told what to run.
  RunResult other = RunProcess({cgoheap, "run", "--", CGOHEAP_GO_BIN, "env", "GOOS"}, env);
  EXPECT_EQ(other.exit_code, 0) << other.err;
  EXPECT_EQ(other.out, "linux\n");
  EXPECT_NE(other.err.find("cgoheap run: `go env` runs no program of yours, and the go command is "
                           "not recorded: build the program, then run it under cgoheap"),
            std::string::npos)
      << other.err;

  const std::string pkg = ProgramsSrc() + "/gotest";
  RunResult test = RunProcess({cgoheap, "run", "--error-exitcode=23", "--", CGOHEAP_GO_BIN, "test",
                               "-C", pkg, "-count=1", "-run=TestLeaks", "."},
                              env, std::chrono::seconds(300));
  EXPECT_EQ(test.exit_code, 23) << test.out << test.err;
  EXPECT_NE(test.out.find("ok  \texample.com/gotest"), std::string::npos) << test.out;
  EXPECT_NE(test.err.find("==    by example.com/gotest.TestLeaks "), std::string::npos) << test.err;
  const std::string test_line = "(" + pkg + "/leak_test.go:" +
                                std::to_string(LineOf(pkg + "/leak_test.go", "// TEST-LEAKS")) + ")";
  EXPECT_NE(test.err.find(test_line), std::string::npos) << test.err;
  const std::string c_line =
      "(" + pkg + "/leak.go:" + std::to_string(LineOf(pkg + "/leak.go", "// C-KEEP")) + ")";
  EXPECT_NE(test.err.find("==    by keep "), std::string::npos) << test.err;
  EXPECT_NE(test.err.find(c_line), std::string::npos) << test.err;
  EXPECT_NE(test.err.find("LEAK SUMMARY: 77 bytes in 1 block never freed, from 1 stack\n"),
            std::string::npos)
      << test.err;
}

// Whether the executable at path loads shared libraries (needs libc).
bool DynamicallyLinked(const std::string& path) {
  ElfImage elf;
  return elf.Open(path.c_str()) && !elf.NeededStartingWith("libc.so").empty();
}

// Under --trace-children, a go command that the agent starts in (Debian's
// Go 1.19 is built with cgo; later releases are static) is a tool of the
// build, not the program: a shell running `go run` reports the shell and the
// program it builds, never the go command (a third process, with its own C
// blocks, before).
TEST(RunTest, TheGoCommandAChildRunsIsNotFollowedButTheProgramItRunsIs) {
  const std::string go = CGOHEAP_GO_BIN_OLDEST;
  ASSERT_TRUE(DynamicallyLinked(go)) << go << " is static: this test needs a go command that "
                                     << "loads shared libraries (Debian's golang-1.19)";
  const std::vector<std::string> env = {"GOCACHE=" CGOHEAP_GOCACHE_OLDEST,
                                        "GOPATH=" CGOHEAP_GOPATH, "GOTOOLCHAIN=local",
                                        "GOENV=off", "GOFLAGS=-buildvcs=false", "GOROOT="};
  const std::string main_go = ProgramsSrc() + "/seed_cmalloc/main.go";
  Report r = RunUnder("/bin/sh", {"-c", "\"$0\" run \"$1\"", go, main_go}, {"--trace-children"},
                      env);
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(Num(r.doc, "processes"), 2) << r.json;  // the shell, the program
  int seen = 0;
  for (const Value& l : r.leaks().list_value().values()) {
    if (FindFrame(Frames(l), "main.main") < 0) continue;  // the shell's
    ++seen;
    EXPECT_EQ(Num(l, "scanned_processes"), 1) << r.json;
    EXPECT_TRUE(Num(l, "bytes") == 17 || Num(l, "bytes") == 134217728) << r.json;
  }
  EXPECT_EQ(seen, 2) << r.json;
}

// A wrapper that execs the program (`exec "$@"`): what the wrapper held
// then, the exec freed; the report is the program's, and says how much of
// the wrapper's it leaves out (--all shows it, as a process of its own).
TEST(RunTest, WhatAWrapperHeldWhenItExecdTheProgramIsNotItsLeak) {
  const std::vector<std::string> wrapper = {"-c", "exec \"$0\"", Program("forks")};
  Report r = RunUnder("/bin/sh", wrapper);
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  ASSERT_EQ(r.num_leaks(), 1) << r.json;
  EXPECT_EQ(Num(r.leak(0), "bytes"), 111) << r.json;
  EXPECT_EQ(Num(r.doc, "processes"), 1) << r.json;
  EXPECT_EQ(Num(r.doc, "exec_hidden"), 1) << r.json;
  EXPECT_GT(Num(r.doc, "exec_hidden_blocks"), 0) << r.json;
  EXPECT_GT(Num(r.doc, "exec_hidden_bytes"), Num(r.doc, "exec_hidden_blocks")) << r.json;
  Report all = RunUnder("/bin/sh", wrapper, {"--all"});
  EXPECT_EQ(Num(all.doc, "processes"), 2) << all.json;
  EXPECT_EQ(Num(all.doc, "exec_hidden"), 0) << all.json;
  EXPECT_GT(all.num_leaks(), 1) << all.json;
  std::vector<std::string> argv = {BinDir() + "/cgoheap", "run", "--", "/bin/sh"};
  argv.insert(argv.end(), wrapper.begin(), wrapper.end());
  RunResult text = RunProcess(argv);
  EXPECT_NE(text.err.find("that 1 program held when replaced by exec are hidden: the exec freed "
                          "them, as an exit does; --all shows them)"),
            std::string::npos)
      << text.err;
  EXPECT_EQ(text.err.find("across"), std::string::npos) << text.err;

  // A store kept across runs (--data): each run's report is of its own
  // processes only, however many it had (here two: the shell, the program).
  TempDir data;
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE("run " + std::to_string(run + 1) + " into one --data store");
    Report kept = RunUnder("/bin/sh", wrapper, {"--data=" + data.path()});
    ASSERT_EQ(kept.num_leaks(), 1) << kept.json;
    EXPECT_EQ(Num(kept.leak(0), "processes"), 1) << kept.json;
    EXPECT_EQ(Num(kept.doc, "processes"), 1) << kept.json;
    EXPECT_EQ(Num(kept.doc, "exec_hidden"), 1) << kept.json;
  }
}

// A stack deeper than a record holds (ring.h, kMaxFrames: 128) keeps its
// innermost frames, where the allocation and the code that made it are, and
// ends with a frame that says it goes on; a shallow one is whole.
TEST(RunTest, AStackDeeperThanARecordHoldsSaysItGoesOn) {
  const std::string src = ProgramSource("deepstack");
  Report r = RunUnder(Program("deepstack"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "deepstack done\n");
  ASSERT_EQ(r.num_leaks(), 2) << r.json;
  const std::string note = "[the stack goes on: cgoheap records its innermost 128 frames]";
  for (int i = 0; i < r.num_leaks(); ++i) {
    const Value& leak = r.leak(i);
    EXPECT_EQ(Num(leak, "blocks"), 1);
    std::vector<FrameRef> frames = Frames(leak);
    ASSERT_FALSE(frames.empty());
    ExpectFrameAt(frames, "main.descend", src, LineOf(src, "// LEAK"));
    int recursions = 0;
    for (const FrameRef& f : frames) {
      recursions += f.function == "main.descend" && f.line == LineOf(src, "// RECURSES");
    }
    if (Num(leak, "bytes") == 301) {
      EXPECT_EQ(frames.back().function, note) << r.json;
      EXPECT_EQ(FindFrame(frames, "main.main"), -1);
      // Every pc recorded is a frame of its own here (nothing inlined):
      // the entry point, 128 pcs, the note.
      EXPECT_EQ(frames.size(), 1u + 128 + 1 + (FindFrame(frames, "main._Cfunc__CMalloc") >= 0))
          << r.json;
      EXPECT_GT(recursions, 100);
    } else {
      EXPECT_EQ(Num(leak, "bytes"), 33);
      EXPECT_EQ(FindFrame(frames, note), -1);
      ExpectFrameAt(frames, "main.main", src, LineOf(src, "// SHALLOW"));
      EXPECT_EQ(recursions, 3);
    }
  }
}

// Sizes of 2^63 and more (a negative length, an overflowed calloc product)
// fail in the real allocator; they must not stop the thread's later
// allocations from being recorded (the countdown the fast paths compare
// against once wrapped round on them: "no leaks").
TEST(RunTest, AllocationsThatCannotSucceedLeaveTheNextOnesRecorded) {
  const std::string src = ProgramsSrc() + "/hugesize/hugesize.c";
  for (const std::string rate : {"0", "1"}) {
    SCOPED_TRACE("--sample-bytes=" + rate);
    Report r = RunUnder(Program("hugesize"), {}, {"--sample-bytes=" + rate});
    EXPECT_EQ(r.run.exit_code, 0) << "the huge allocations did not all fail\n" << r.run.err;
    ASSERT_EQ(r.num_leaks(), 3) << r.json;
    const struct {
      const char* function;
      double bytes;
      const char* marker;
    } want[] = {{"NegativeMalloc", 100, "// LEAK: after malloc(-4096)"},
                {"OverflowedCalloc", 200, "// LEAK: after the overflowed calloc"},
                {"NegativeRealloc", 300, "// LEAK: after realloc(-4096)"}};
    for (const auto& w : want) {
      SCOPED_TRACE(w.function);
      const Value* leak = nullptr;
      for (int i = 0; i < r.num_leaks(); ++i) {
        if (FindFrame(Frames(r.leak(i)), w.function) >= 0) leak = &r.leak(i);
      }
      ASSERT_NE(leak, nullptr) << "not reported: " << r.json;
      EXPECT_NEAR(Num(*leak, "bytes"), w.bytes, 0.001) << r.json;
      EXPECT_NEAR(Num(*leak, "blocks"), 1, 0.001) << r.json;
      ExpectFrameAt(Frames(*leak), w.function, src, LineOf(src, w.marker));
    }
  }
}

// glib's slice allocator (before glib 2.76) hands objects out of pooled
// blocks: `cgoheap run` and the agent make it malloc each one (G_SLICE,
// agent/pool_env.h), so the leak is the ten objects and their own stack,
// not the pool's block with the stack of the call that first grew it.
TEST(RunTest, PooledAllocatorsAreAskedForMallocUnlessTheUserChose) {
  const std::string src = ProgramSource("gslice");
  Report r = RunUnder(Program("gslice"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "G_SLICE=always-malloc PYTHONMALLOC=malloc\n");
  const Value* leak = nullptr;
  for (int i = 0; i < r.num_leaks(); ++i) {
    std::vector<FrameRef> frames = Frames(r.leak(i));
    EXPECT_NE(frames.at(0).function, "posix_memalign") << "a pool's block: " << r.json;
    if (FindFrame(frames, "leak") >= 0) leak = &r.leak(i);
  }
  ASSERT_NE(leak, nullptr) << r.json;
  EXPECT_EQ(Num(*leak, "bytes"), 240);
  EXPECT_EQ(Num(*leak, "blocks"), 10);
  std::vector<FrameRef> frames = Frames(*leak);
  EXPECT_GE(FindFrame(frames, "g_slice_alloc"), 0) << r.json;
  ExpectFrameAt(frames, "leak", src, LineOf(src, "// LEAK: 10 x 24 bytes"));
  ExpectFrameAt(frames, "main.main", src, LineOf(src, "// GO-CALLS-LEAK"));

  // A user's own choice stays.
  Report own = RunUnder(Program("gslice"), {}, {}, {"G_SLICE=debug-blocks", "PYTHONMALLOC=pymalloc"});
  EXPECT_EQ(own.run.out, "G_SLICE=debug-blocks PYTHONMALLOC=pymalloc\n") << own.run.err;

  // The agent started by hand sets them for what reads them after main
  // (outside its hooks: the guard build aborts on an allocation inside
  // one); an agent with nothing to record leaves the environment alone.
  const std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  TempDir rings;
  RunResult by_hand =
      RunProcess({Program("gslice")}, {"LD_PRELOAD=" + agent, "CGOHEAP_RING_DIR=" + rings.path()});
  EXPECT_EQ(by_hand.exit_code, 0) << by_hand.err;
  EXPECT_EQ(by_hand.out, "G_SLICE=always-malloc PYTHONMALLOC=malloc\n");
  RunResult off = RunProcess({Program("gslice")}, {"LD_PRELOAD=" + agent});
  EXPECT_EQ(off.out, "G_SLICE=(unset) PYTHONMALLOC=(unset)\n") << off.err;
}

// A program that cannot be stopped at its exit (here, already traced: by
// strace, as a debugger or a container without ptrace would refuse it) is
// reported as before, every block never freed, and the report says why
// nothing is told still reachable.
TEST(RunTest, AProgramThatCannotBeTracedIsNotScannedAndSaysWhy) {
  TempDir dir;
  const std::string report = dir.path() + "/report.json";
  RunResult run = RunProcess({"strace", "-f", "-o", "/dev/null", BinDir() + "/cgoheap", "run",
                              "--json", "--report=" + report, "--", Program("reachable")});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  Value doc = ParseJson(ReadFile(report));
  EXPECT_EQ(Num(doc, "scanned"), 0);
  EXPECT_EQ(Num(doc, "not_scanned"), 1);
  const auto& why = Field(doc, "not_scanned_reasons").list_value();
  ASSERT_EQ(why.values_size(), 1) << ReadFile(report);
  EXPECT_EQ(why.values(0).string_value().rfind("ptrace is not allowed here", 0), 0u);
  const auto& leaks = Field(doc, "leaks").list_value();
  ASSERT_EQ(leaks.values_size(), 5);
  double bytes = 0;
  for (const Value& l : leaks.values()) {
    bytes += Num(l, "bytes");
    EXPECT_EQ(Num(l, "reachable_blocks"), 0);
  }
  EXPECT_EQ(bytes, 212);
}

// A program whose allocator is not glibc's but a shared library found after
// the agent, with an inaccessible page before every block
// (tests/programs/nextalloc): the agent's free must never read before a
// block there (it asks its filter instead of the header glibc's blocks
// let it test), in exact and sampled mode; each leak exact.
TEST(RunTest, AnAllocatorAfterTheAgentThatIsNotGlibcsIsNeverReadBeforeItsBlocks) {
  const std::string src = ProgramsSrc() + "/nextalloc/nextalloc.c";
  for (const std::string mode : {"", "--sample-bytes=1", "--sample-bytes=524288"}) {
    SCOPED_TRACE(mode);
    std::vector<std::string> flags;
    if (!mode.empty()) flags.push_back(mode);
    Report r = RunUnder(Program("nextalloc"), {}, flags);
    EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
    EXPECT_EQ(r.run.out, "leaked 4\n");
    if (mode == "--sample-bytes=524288") continue;  // blocks of 1 KiB: seldom sampled there
    ASSERT_EQ(r.num_leaks(), 4) << r.json;
    const std::vector<std::pair<std::string, int>> cases = {
        {"malloc", 1001}, {"calloc", 1002}, {"realloc", 1003}, {"memalign", 1004}};
    for (const auto& [api, bytes] : cases) {
      SCOPED_TRACE(api);
      const Value* leak = nullptr;
      for (int i = 0; i < r.num_leaks(); ++i) {
        if (Num(r.leak(i), "bytes") == bytes) leak = &r.leak(i);
      }
      ASSERT_NE(leak, nullptr) << r.json;
      EXPECT_EQ(Num(*leak, "blocks"), 1);
      std::vector<FrameRef> frames = Frames(*leak);
      ASSERT_GE(frames.size(), 2u);
      EXPECT_EQ(frames[0].function, api);
      ExpectFrameAt(frames, "main", src, LineOf(src, "// LEAK: " + api));
    }
  }
}

// A program whose executable defines malloc (a statically linked jemalloc,
// tcmalloc or mimalloc) never calls the agent's: its report says so instead
// of "no leaks". A program that does not is never told so.
TEST(RunTest, AnAllocatorTheAgentCannotSeeIsSaid) {
  Report r = RunUnder(Program("ownmalloc"));
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.num_leaks(), 0) << r.json;
  EXPECT_EQ(Num(r.doc, "foreign_allocator"), 1) << r.json;
  std::vector<std::string> fns;
  for (const Value& v : Field(r.doc, "foreign_allocator_functions").list_value().values()) {
    fns.push_back(v.string_value());
  }
  EXPECT_EQ(fns, (std::vector<std::string>{"malloc", "free", "calloc", "realloc"}));

  RunResult text = RunProcess({BinDir() + "/cgoheap", "run", "--", Program("ownmalloc")});
  EXPECT_NE(text.err.find("WARNING: 1 process allocates through functions cgoheap's agent does "
                          "not see (malloc, free, calloc, realloc: defined by the program itself"),
            std::string::npos)
      << text.err;

  Report plain = RunUnder(Program("seed_cstring"));
  EXPECT_EQ(Num(plain.doc, "foreign_allocator"), 0) << plain.json;
  EXPECT_EQ(plain.run.err.find("WARNING"), std::string::npos) << plain.run.err;
}

TEST(RunTest, SampledModeEstimatesTheLeakWithoutBias) {
  std::string src = ProgramSource("goroutines");
  // 8 x 100000 iterations: 8000 leaked blocks of 48 bytes among 2.4M
  // allocations. At 1 sample per 4096 bytes about 93 of them are sampled:
  // the estimate's standard deviation is about 10%.
  Report r = RunUnder(Program("goroutines"), {"8", "100000"}, {"--sample-bytes=4096"});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  ASSERT_EQ(r.num_leaks(), 1) << "churned allocations are freed, even when sampled\n" << r.json;
  const Value& leak = r.leak(0);
  EXPECT_TRUE(Field(leak, "estimated").bool_value());
  EXPECT_EQ(Num(leak, "sample_bytes"), 4096);
  EXPECT_NEAR(Num(leak, "blocks"), 8000, 8000 * 0.4);
  EXPECT_NEAR(Num(leak, "bytes"), 8000 * 48, 8000 * 48 * 0.4);
  ExpectFrameAt(Frames(leak), "main.worker", src, LineOf(src, "// LEAK: 48 bytes"));
}

TEST(RunTest, DeadForwarderNeverBlocksTheProgramAndDropsAreCounted) {
  // The agent with nobody draining its ring: exact mode waits 100 ms once,
  // then drops at once while the reader does not move. (Blocks freed on
  // other threads than their own: a thread's own pairs would mostly be
  // rolled back in its lane, and never fill it.)
  TempDir rings;
  auto start = std::chrono::steady_clock::now();
  RunResult r = RunProcess({Program("handoff"), "6", "3", "60000"},
                           {"LD_PRELOAD=" + std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent.so",
                            "CGOHEAP_RING_DIR=" + rings.path(), "CGOHEAP_RING_MB=1",
                            "CGOHEAP_FULL_WAIT_MS=100"});
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "leaked 1080\n");  // 6 waves x 3 pairs x 60000 / 1000: it ran to its end
  EXPECT_LT(took, std::chrono::seconds(60));
  std::string ring;
  for (const auto& e : std::filesystem::directory_iterator(rings.path())) ring = e.path();
  client::RingReader reader;
  ASSERT_TRUE(reader.Open(ring));
  EXPECT_GT(reader.dropped_events(), 1'000'000u) << "2.2M events into lanes of 1 MiB";
}

TEST_P(CgoProgramTest, RealCgoLibraryBehavesIdentically) {
  RunResult plain = RunProcess({P("sqlite")});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  Report r = RunUnder(P("sqlite"));
  EXPECT_EQ(r.run.exit_code, plain.exit_code);
  EXPECT_EQ(r.run.out, plain.out);
  EXPECT_TRUE(r.run.out.ends_with("rows 200 last name-199\n")) << r.run.out;
  EXPECT_EQ(r.num_leaks(), 0);
}

// A database opened and never closed: every block SQLite allocated for it
// leaks, each through the library's Go and C code. The program's own code
// is the line that opened it, never the library's C wrapper
// (_sqlite3_open_v2, in go-sqlite3's package directory).
TEST_P(CgoProgramTest, RealCgoLibraryLeakIsMarkedAtTheProgramsLine) {
  std::string src = ProgramSource("sqlite");
  const int line = LineOf(src, "// LEAK: a connection never closed");
  Report r = RunUnder(P("sqlite"), {"leak"});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  ASSERT_GE(r.num_leaks(), 5) << r.json;
  for (int i = 0; i < r.num_leaks(); ++i) {
    std::vector<FrameRef> frames = Frames(r.leak(i));
    int user = static_cast<int>(Num(r.leak(i), "user_frame"));
    ASSERT_GE(user, 0) << "leak " << i << ": " << r.json;
    ASSERT_LT(user, static_cast<int>(frames.size()));
    EXPECT_EQ(frames[user].function, "main.main") << "leak " << i;
    EXPECT_EQ(frames[user].file, src) << "leak " << i;
    EXPECT_EQ(frames[user].line, line) << "leak " << i;
    EXPECT_NE(Str(r.leak(i), "user_code").find("package main"), std::string::npos);
  }
}

// A SQL function written in Go, which SQLite calls back from inside
// sqlite3_step for each row, leaks a C block per row: the stack goes from
// the function's line through SQLite's C code to the Go line of the query.
TEST_P(CgoProgramTest, SqliteFunctionInGoLeaksWithTheQueryLine) {
  std::string src = ProgramSource("sqlite");
  Report r = RunUnder(P("sqlite"), {"udf"});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.run.out, "sum 30 leaked 5\n");
  ASSERT_EQ(r.num_leaks(), 1) << r.json;
  EXPECT_EQ(Num(r.leak(0), "bytes"), 5 * 77);
  EXPECT_EQ(Num(r.leak(0), "blocks"), 5);
  std::vector<FrameRef> frames = Frames(r.leak(0));
  int tag = FindFrame(frames, "main.tag"), step = FindFrame(frames, "sqlite3_step"),
      query = FindFrame(frames, "main.udf");
  ASSERT_GE(tag, 0) << r.json;
  ASSERT_GT(step, tag) << r.json;
  ASSERT_GT(query, step) << r.json;
  ExpectFrameAt(frames, "main.tag", src, LineOf(src, "// LEAK: 77 bytes per row"));
  ExpectFrameAt(frames, "main.udf", src, LineOf(src, "// QUERY CALLS tag"));
  EXPECT_EQ(Num(r.leak(0), "user_frame"), tag);
  std::vector<int> own;
  for (const Value& v : Field(r.leak(0), "user_frames").list_value().values()) {
    own.push_back(static_cast<int>(v.number_value()));
  }
  EXPECT_NE(std::find(own.begin(), own.end(), query), own.end()) << r.json;
}

TEST_P(CgoProgramTest, StrippedAndPositionIndependentBuildsGetTheSameFunctionsAndLines) {
  auto go_frames = [](const Value& leak) {
    std::vector<std::string> out;
    for (const FrameRef& f : Frames(leak)) {
      if (f.function.find('.') != std::string::npos) {
        out.push_back(f.function + " " + f.file + ":" + std::to_string(f.line));
      }
    }
    return out;
  };
  Report full = RunUnder(P("seed_cmalloc"));
  ASSERT_EQ(full.num_leaks(), 2);
  // -s -w; -buildmode=pie (before Go 1.26 its table is not a section of its
  // own, and moduledata's pointers are relocations); and both.
  for (const char* variant :
       {"seed_cmalloc_stripped", "seed_cmalloc_pie", "seed_cmalloc_pie_stripped"}) {
    SCOPED_TRACE(variant);
    Report other = RunUnder(P(variant));
    ASSERT_EQ(other.num_leaks(), 2) << other.json;
    EXPECT_EQ(Num(other.doc, "unwind_failures"), 0);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(Num(other.leak(i), "bytes"), Num(full.leak(i), "bytes"));
      std::vector<std::string> a = go_frames(full.leak(i)), b = go_frames(other.leak(i));
      EXPECT_GE(a.size(), 4u);
      EXPECT_EQ(a, b);
    }
  }
}

TEST(RunTest, AllShowsWhatTheGoRuntimeAndLibcAllocate) {
  // One run, kept in a data directory, queried both ways: how many threads
  // the Go runtime starts (and so its internal stacks) varies between runs.
  TempDir data;
  Report all = RunUnder(Program("seed_cstring"), {}, {"--all", "--data=" + data.path()});
  ASSERT_EQ(all.run.exit_code, 0) << all.run.err;
  int internal = 0, user = 0;
  uint64_t internal_bytes = 0;
  bool runtime_reason = false, stdio_reason = false;
  for (const Value& l : all.leaks().list_value().values()) {
    if (!Field(l, "internal").bool_value()) {
      ++user;
      continue;
    }
    ++internal;
    internal_bytes += static_cast<uint64_t>(Num(l, "bytes"));
    runtime_reason |= Str(l, "internal_reason").find("thread-local storage") != std::string::npos ||
                      Str(l, "internal_reason").find("Go runtime") != std::string::npos;
    stdio_reason |= Str(l, "internal_reason").find("stdio buffer") != std::string::npos;
  }
  EXPECT_EQ(user, 1);
  EXPECT_GE(internal, 2);
  EXPECT_TRUE(runtime_reason);
  EXPECT_TRUE(stdio_reason);
  // The same data without --all: the user's leak, the rest counted as hidden.
  Cgoheapd d(data.path());
  RunResult def = RunProcess({BinDir() + "/cgoheap", "leaks", "--server=" + d.address(), "--json"});
  ASSERT_EQ(def.exit_code, 0) << def.err;
  Value doc = ParseJson(def.out);
  EXPECT_EQ(Field(doc, "leaks").list_value().values_size(), 1);
  EXPECT_EQ(Num(doc, "hidden"), internal);
  EXPECT_EQ(Num(doc, "hidden_bytes"), internal_bytes);
}

// A Go release whose asmcgocall the agent does not understand (made so with
// the guard build's test switch): its cgo calls are never walked, that is
// said in the report, the JSON and `ps`, and no leak is hidden for lack of
// its Go frames: both seed leaks are shown, marked incomplete.
TEST(RunTest, UnknownGoReleaseIsSaidAndHidesNoLeak) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  std::vector<std::string> env = {"CGOHEAP_TEST_UNKNOWN_GO_CROSSING=1"};
  Report r = RunUnder(Program("seed_cmalloc"), {}, {"--agent=" + agent}, env);
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(Num(r.doc, "go_crossing_unknown"), 1);
  EXPECT_GE(Num(r.doc, "unwind_failures"), 2);
  ASSERT_EQ(r.num_leaks(), 2) << r.json;
  EXPECT_EQ(Num(r.leak(0), "bytes"), 17);  // lost, before the still reachable
  EXPECT_EQ(Num(r.leak(1), "bytes"), 134217728);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Str(r.leak(i), "incomplete"), "the Go frames above the cgo call could not be recovered");
    EXPECT_FALSE(Field(r.leak(i), "internal").bool_value());
    std::vector<FrameRef> frames = Frames(r.leak(i));
    ASSERT_FALSE(frames.empty());
    EXPECT_EQ(frames.back().function, "runtime.asmcgocall") << r.json;
    EXPECT_EQ(FindFrame(frames, "main.main"), -1);
  }

  TempDir data;
  RunResult text = RunProcess({BinDir() + "/cgoheap", "run", "--agent=" + agent,
                               "--data=" + data.path(), "--", Program("seed_cmalloc")},
                              env);
  EXPECT_NE(text.err.find("WARNING: 1 process built by a Go release whose cgo calls this cgoheap "
                          "does not understand"),
            std::string::npos)
      << text.err;
  EXPECT_NE(text.err.find("[incomplete: the Go frames above the cgo call could not be recovered]"),
            std::string::npos)
      << text.err;
  Cgoheapd d(data.path());
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address()});
  EXPECT_NE(ps.out.find("go1." + DefaultGoRelease().substr(2)), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("!"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("WARNING: process "), std::string::npos) << ps.out;
  RunResult json = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"});
  Value procs = ParseJson(json.out);
  ASSERT_EQ(Field(procs, "processes").list_value().values_size(), 1) << json.out;
  const Value& p = Field(procs, "processes").list_value().values(0);
  EXPECT_TRUE(Field(p, "go_crossing_unknown").bool_value());
  EXPECT_GE(Num(p, "unwind_failures"), 2);
}

// A file name in Latin-1 is as common an argument as any on older systems,
// and an argument can hold anything, terminal escape sequences included.
// Neither costs the report, and neither reaches the terminal of whoever
// lists the processes.
TEST(RunTest, ArgumentsThatAreNotTextKeepTheReportExactAndShowEscaped) {
  const std::string latin1 = "caf\xe9.txt";
  const std::string hostile = "\x1b]0;owned\x07\x1b[2J\n==1== 0 bytes";
  const std::string service = "caisse-\xe9";
  TempDir data;
  RunResult run = RunProcess({BinDir() + "/cgoheap", "run", "--data=" + data.path(),
                              "--service=" + service, "--", Program("seed_cstring"), latin1,
                              hostile});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("17 bytes in 1 block never freed (1 of 1 leak)"), std::string::npos)
      << run.err;
  EXPECT_EQ(run.err.find("UTF-8"), std::string::npos) << run.err;

  Cgoheapd d(data.path());
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address()});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  EXPECT_NE(ps.out.find("caf\\xe9.txt \\x1b]0;owned\\x07\\x1b[2J\\n==1== 0 bytes"),
            std::string::npos)
      << ps.out;
  EXPECT_NE(ps.out.find("caisse-\\xe9"), std::string::npos) << ps.out;
  EXPECT_EQ(ps.out.find('\x1b'), std::string::npos) << "a raw escape reached the terminal";
  EXPECT_EQ(ps.out.find('\x07'), std::string::npos);

  // JSON carries them as valid text, and the original bytes come back.
  RunResult json = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"});
  Value procs = ParseJson(json.out);
  ASSERT_EQ(Field(procs, "processes").list_value().values_size(), 1) << json.out;
  const Value& p = Field(procs, "processes").list_value().values(0);
  const auto& args = Field(p, "args").list_value();
  ASSERT_EQ(args.values_size(), 3) << json.out;
  EXPECT_EQ(args.values(1).string_value(), "caf\\xe9.txt");
  EXPECT_EQ(FromWireString(args.values(1).string_value()), latin1);
  EXPECT_EQ(FromWireString(args.values(2).string_value()), hostile);
  EXPECT_EQ(FromWireString(Str(p, "service")), service);

  RunResult leaks = RunProcess({BinDir() + "/cgoheap", "leaks", "--server=" + d.address(),
                                "--service=" + WireString(service), "--json"});
  Value doc = ParseJson(leaks.out);
  ASSERT_EQ(Field(doc, "leaks").list_value().values_size(), 1) << leaks.out << leaks.err;
  const Value& leak = Field(doc, "leaks").list_value().values(0);
  EXPECT_EQ(Num(leak, "bytes"), 17);
  std::string src = ProgramSource("seed_cstring");
  ExpectFrameAt(Frames(leak), "main.main", src, LineOf(src, "// LEAK: 17 bytes"));
}

// A program that truncates its own ring (a wild write, or on purpose) must
// not take the forwarder down with SIGBUS: what was read is kept, and the
// report, ps and JSON say that this process's later events are missing.
TEST(RunTest, RingTruncatedByItsProgramIsReportedAndTheForwarderGoesOn) {
  TempDir data;
  std::string src = ProgramSource("truncring");
  RunResult run = RunProcess({BinDir() + "/cgoheap", "run", "--data=" + data.path(), "--",
                              Program("truncring")});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("its ring file was truncated while it was read"), std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("WARNING: 1 process damaged its cgoheap ring"), std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("4,096 bytes in 1 block never freed"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("main.go:" + std::to_string(LineOf(src, "// LEAK: 4096 bytes"))),
            std::string::npos)
      << run.err;

  Cgoheapd d(data.path());
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address()});
  EXPECT_NE(ps.out.find("its ring file was truncated while it was read, so its events after that "
                        "point were not read"),
            std::string::npos)
      << ps.out;
  Value procs = ParseJson(
      RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"}).out);
  ASSERT_EQ(Field(procs, "processes").list_value().values_size(), 1);
  EXPECT_EQ(Str(Field(procs, "processes").list_value().values(0), "ring_damage"),
            "its ring file was truncated while it was read");
  Value leaks = ParseJson(
      RunProcess({BinDir() + "/cgoheap", "leaks", "--server=" + d.address(), "--json"}).out);
  EXPECT_EQ(Num(leaks, "damaged_rings"), 1);
}

// Debian sets DEBUGINFOD_URLS in every login shell, and libdw then asks those
// servers for the debug info of each object that has none here: a
// forwarder in a production pod would send the build ids of everything it
// symbolizes out over the network. Only --debuginfod allows it. The program
// itself still gets the variable.
TEST(RunTest, NoDebugInfoIsFetchedOverTheNetworkUnlessAsked) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 64), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  TempDir cache;
  std::vector<std::string> env = {"DEBUGINFOD_URLS=" + url, "DEBUGINFOD_TIMEOUT=1",
                                  "DEBUGINFOD_CACHE_PATH=" + cache.path()};
  auto connections = [&] {
    int n = 0;
    for (int fd; (fd = accept(listener, nullptr, nullptr)) >= 0; ++n) close(fd);
    return n;
  };

  const std::string program = ProgramsDir() + "/nodebug";  // C, built without debug info
  RunResult quiet = RunProcess({BinDir() + "/cgoheap", "run", "--", program}, env);
  EXPECT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_NE(quiet.err.find("100 bytes in 1 block never freed"), std::string::npos) << quiet.err;
  EXPECT_EQ(connections(), 0);
  RunResult child = RunProcess(
      {BinDir() + "/cgoheap", "run", "--", "sh", "-c", "echo \"urls=$DEBUGINFOD_URLS\""}, env);
  EXPECT_NE(child.out.find("urls=" + url), std::string::npos) << child.out;

  RunResult asked = RunProcess({BinDir() + "/cgoheap", "run", "--debuginfod", "--", program}, env);
  EXPECT_EQ(asked.exit_code, 0) << asked.err;
  EXPECT_GT(connections(), 0) << "the test cannot tell: libdw asked no server even when allowed";
  close(listener);
}

TEST(RunTest, GuardedAgentNeverAllocatesInsideAHook) {
  std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so";
  Report r = RunUnder(Program("goroutines"), {"4", "2000"}, {"--agent=" + agent});
  EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
  ASSERT_EQ(r.num_leaks(), 1);
  EXPECT_EQ(Num(r.leak(0), "blocks"), 4 * 20);
  Report seed = RunUnder(Program("seed_thread"), {}, {"--agent=" + agent});
  EXPECT_EQ(seed.run.exit_code, 0) << seed.run.err;
  EXPECT_EQ(seed.num_leaks(), 2);
}

TEST(RunTest, ExitCodeAndSignalArePassedThrough) {
  RunResult code = RunProcess({BinDir() + "/cgoheap", "run", "--", "sh", "-c", "exit 3"});
  EXPECT_EQ(code.exit_code, 3) << code.err;
  EXPECT_NE(code.err.find("LEAK SUMMARY"), std::string::npos) << code.err;
  RunResult killed = RunProcess({BinDir() + "/cgoheap", "run", "--", "sh", "-c", "kill -KILL $$"});
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
}

// --error-exitcode=N, for a check in CI or under `go test -exec`: N when
// the report lists a leak (as valgrind's), the program's own exit code when
// it lists none, N when the run could not be checked at all; with --server,
// where the report stays, the server is asked.
TEST(RunTest, ErrorExitcodeTellsACheckWhetherTheRunLeaked) {
  const std::string cgoheap = BinDir() + "/cgoheap";
  RunResult leaked =
      RunProcess({cgoheap, "run", "--error-exitcode=23", "--", Program("seed_cstring")});
  EXPECT_EQ(leaked.exit_code, 23) << leaked.err;
  EXPECT_NE(leaked.err.find("LEAK SUMMARY: 17 bytes in 1 block"), std::string::npos) << leaked.err;
  RunResult clean = RunProcess({cgoheap, "run", "--error-exitcode=23", "--", Program("noleak")});
  EXPECT_EQ(clean.exit_code, 0) << clean.err;
  EXPECT_NE(clean.err.find("LEAK SUMMARY: no leaks"), std::string::npos) << clean.err;
  // Without the flag, a leak leaves the exit code alone.
  EXPECT_EQ(RunProcess({cgoheap, "run", "--", Program("seed_cstring")}).exit_code, 0);
  RunResult unrecorded = RunProcess({cgoheap, "run", "--error-exitcode=23",
                                     "--agent=/lib/x86_64-linux-gnu/libm.so.6", "--", "true"});
  EXPECT_EQ(unrecorded.exit_code, 23) << unrecorded.err;
  RunResult range = RunProcess({cgoheap, "run", "--error-exitcode=256", "--", "true"});
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_NE(range.err.find("--error-exitcode=256 is out of range: use 0 to 255"),
            std::string::npos)
      << range.err;

  TempDir data;
  Cgoheapd d(data.path());
  const std::string server = "--server=" + d.address();
  RunResult remote_leaked =
      RunProcess({cgoheap, "run", server, "--error-exitcode=23", "--", Program("seed_cstring")});
  EXPECT_EQ(remote_leaked.exit_code, 23) << remote_leaked.err;
  EXPECT_NE(remote_leaked.err.find("recorded on " + d.address()), std::string::npos)
      << remote_leaked.err;
  // The store holds the leaky run too: only this run's processes count.
  RunResult remote_clean =
      RunProcess({cgoheap, "run", server, "--error-exitcode=23", "--", Program("noleak")});
  EXPECT_EQ(remote_clean.exit_code, 0) << remote_clean.err;
}

// Go tests under cgoheap through the go command's -exec
// (tests/programs/gotest): each test binary runs under `cgoheap run`, its
// report goes into the test's output, and --error-exitcode fails a package
// that leaks. The go command links the binaries it runs with -s -w: the Go
// frames are named from .gopclntab all the same, and with
// -ldflags='-s=false -w=false' the C function is too.
TEST(RunTest, GoTestExecRunsEachTestBinaryUnderCgoheap) {
  const std::string dir = ProgramsSrc() + "/gotest";
  const std::vector<std::string> env = {"GOCACHE=" CGOHEAP_GOCACHE, "GOPATH=" CGOHEAP_GOPATH,
                                        "GOTOOLCHAIN=local", "GOENV=off",
                                        "GOFLAGS=-buildvcs=false", "GOROOT="};
  auto go_test = [&](const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {CGOHEAP_GO_BIN, "test", "-C", dir, "-count=1", "-v",
                                     "-exec", BinDir() + "/cgoheap run --error-exitcode=23 --"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back(".");
    RunResult r = RunProcess(argv, env, std::chrono::seconds(300));
    r.out += r.err;
    return r;
  };
  const std::string c_line =
      "(" + dir + "/leak.go:" + std::to_string(LineOf(dir + "/leak.go", "// C-KEEP")) + ")";
  const std::string go_line =
      "(" + dir + "/leak.go:" + std::to_string(LineOf(dir + "/leak.go", "// GO-CALLS-KEEP")) + ")";
  const std::string test_line = "(" + dir + "/leak_test.go:" +
                                std::to_string(LineOf(dir + "/leak_test.go", "// TEST-LEAKS")) + ")";

  RunResult leaky = go_test({"-run=TestLeaks", "-ldflags=-s=false -w=false"});
  EXPECT_EQ(leaky.exit_code, 1) << leaky.out;
  EXPECT_NE(leaky.out.find("FAIL\texample.com/gotest"), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find("77 bytes in 1 block never freed"), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find("by keep "), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find(c_line), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find("by example.com/gotest.Leak "), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find(go_line), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find("by example.com/gotest.TestLeaks "), std::string::npos) << leaky.out;
  EXPECT_NE(leaky.out.find(test_line), std::string::npos) << leaky.out;

  // As the go command builds it: the C frame unnamed, the Go frames exact.
  RunResult stripped = go_test({"-run=TestLeaks"});
  EXPECT_EQ(stripped.exit_code, 1) << stripped.out;
  EXPECT_NE(stripped.out.find("77 bytes in 1 block never freed"), std::string::npos)
      << stripped.out;
  EXPECT_EQ(stripped.out.find(c_line), std::string::npos) << stripped.out;
  EXPECT_NE(stripped.out.find(go_line), std::string::npos) << stripped.out;
  EXPECT_NE(stripped.out.find(test_line), std::string::npos) << stripped.out;

  RunResult balanced = go_test({"-run=TestBalanced"});
  EXPECT_EQ(balanced.exit_code, 0) << balanced.out;
  EXPECT_NE(balanced.out.find("LEAK SUMMARY: no leaks"), std::string::npos) << balanced.out;
  EXPECT_NE(balanced.out.find("ok  \texample.com/gotest"), std::string::npos) << balanced.out;
}

TEST(RunTest, BadInputGetsAClearError) {
  std::string cgoheap = BinDir() + "/cgoheap";
  RunResult unknown = RunProcess({cgoheap, "run", "--bogus", "--", "true"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("unknown flag --bogus for cgoheap run"), std::string::npos)
      << unknown.err;

  // A program the agent never starts in (here: a library that is no agent)
  // is said to be unrecorded, not reported as free of leaks.
  RunResult unrecorded =
      RunProcess({cgoheap, "run", "--agent=/lib/x86_64-linux-gnu/libm.so.6", "--", "true"});
  EXPECT_EQ(unrecorded.exit_code, 0);
  EXPECT_NE(unrecorded.err.find("true was not recorded: the agent did not start in it"),
            std::string::npos)
      << unrecorded.err;
  EXPECT_EQ(unrecorded.err.find("LEAK SUMMARY"), std::string::npos) << unrecorded.err;

  // A statically linked program: said so, and what to build instead.
  RunResult static_exe = RunProcess({cgoheap, "run", "--", Program("staticexe")});
  EXPECT_EQ(static_exe.exit_code, 0);
  EXPECT_NE(static_exe.err.find("staticexe was not recorded: it is statically linked, and "
                                "LD_PRELOAD needs the dynamic loader to load the agent"),
            std::string::npos)
      << static_exe.err;
  EXPECT_NE(static_exe.err.find("recorded once built without -static"), std::string::npos)
      << static_exe.err;
  EXPECT_EQ(static_exe.err.find("LEAK SUMMARY"), std::string::npos) << static_exe.err;

  // An agent of another release: its ring is not read, and the user is
  // told why and what to do, not that the agent did not start.
  RunResult other_version = RunProcess(
      {cgoheap, "run", "--agent=" + std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent_guard.so",
       "--", Program("seed_cmalloc")},
      {"CGOHEAP_TEST_RING_VERSION=" + std::to_string(ring::kVersion - 1)});
  EXPECT_EQ(other_version.exit_code, 0) << other_version.err;
  EXPECT_NE(other_version.err.find("not a ring of this version of cgoheap"), std::string::npos)
      << other_version.err;
  EXPECT_NE(other_version.err.find("was not recorded: the agent started in it, but its ring "
                                   "could not be read (see above); use the agent built with this "
                                   "cgoheap (--agent)"),
            std::string::npos)
      << other_version.err;
  EXPECT_EQ(other_version.err.find("LEAK SUMMARY"), std::string::npos) << other_version.err;

  RunResult missing = RunProcess({cgoheap, "run", "--", "/nonexistent/program"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_NE(missing.err.find("cannot run '/nonexistent/program': No such file or directory"),
            std::string::npos)
      << missing.err;

  RunResult nothing = RunProcess({cgoheap, "run"});
  EXPECT_EQ(nothing.exit_code, 2);
  EXPECT_NE(nothing.err.find("nothing to run"), std::string::npos) << nothing.err;

  // A port nobody listens on: bind one, close it, use it.
  RunResult unreachable = RunProcess({cgoheap, "run", "--server=127.0.0.1:1", "--", "true"});
  EXPECT_EQ(unreachable.exit_code, 2);
  EXPECT_NE(unreachable.err.find("cannot reach cgoheapd at 127.0.0.1:1"), std::string::npos)
      << unreachable.err;

  // A local server that cannot start (--data names a file): said, and the
  // program does not run unrecorded.
  TempDir dir;
  const std::string not_a_dir = dir.path() + "/file", marker = dir.path() + "/ran";
  { std::ofstream(not_a_dir) << "x"; }
  RunResult no_server = RunProcess(
      {cgoheap, "run", "--data=" + not_a_dir, "--", "/bin/sh", "-c", "echo > " + marker});
  EXPECT_EQ(no_server.exit_code, 2);
  EXPECT_NE(no_server.err.find("cannot start the local server: opening RocksDB in " + not_a_dir),
            std::string::npos)
      << no_server.err;
  EXPECT_NE(no_server.err.find("check --data"), std::string::npos) << no_server.err;
  EXPECT_FALSE(std::filesystem::exists(marker));

  RunResult bad_rate = RunProcess({cgoheap, "run", "--sample-bytes=lots", "--", "true"});
  EXPECT_EQ(bad_rate.exit_code, 2);
  EXPECT_NE(bad_rate.err.find("--sample-bytes takes a non-negative whole number, not 'lots'"),
            std::string::npos)
      << bad_rate.err;

  RunResult cmd = RunProcess({cgoheap, "frobnicate"});
  EXPECT_EQ(cmd.exit_code, 2);
  EXPECT_NE(cmd.err.find("unknown command 'frobnicate'"), std::string::npos);
}

}  // namespace
}  // namespace cgoheap::testing
