// Profiles read by Go's own pprof (`go tool pprof` of the default Go release,
// never our own parser): `cgoheap pprof` and cgoheapd's /debug/pprof/
// endpoints give, for known programs, exactly the leaks and live heap that
// `cgoheap leaks` and `cgoheap top` report: bytes, blocks, every frame (C and
// Go, inlined calls included) with its file:line, and nothing else.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

using google::protobuf::Value;

std::vector<std::string> Lines(const std::string& text) { return absl::StrSplit(text, '\n'); }

// Go's pprof: cmd/pprof of the Go release the test programs are built with
// (what `go tool pprof` runs, built once by tests/CMakeLists.txt). The copies
// of fetched profiles go to tmp.
RunResult GoPprof(const std::vector<std::string>& args, const std::string& tmp) {
  std::vector<std::string> argv = {CGOHEAP_GO_PPROF};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, {"HOME=" + tmp, "PPROF_TMPDIR=" + tmp});
}

// One sample as `go tool pprof -traces` prints it.
struct Trace {
  std::map<std::string, std::string> labels;
  std::string value;                // "134217728B" with -unit=B, "64" for counts
  std::vector<std::string> frames;  // "function file:line", "(inline)" appended when inlined
  std::string Text() const { return absl::StrCat(value, " ", absl::StrJoin(frames, " | ")); }
};

// The traces of -traces output: blocks after "-----------+---" lines, a
// block being label lines ("      kind:  exit"), the value with the first
// frame, then one frame per line (from column 13).
std::vector<Trace> ParseTraces(const std::string& out) {
  std::vector<Trace> traces;
  bool in = false;
  for (const std::string& line : Lines(out)) {
    if (line.rfind("-----------+", 0) == 0) {
      traces.emplace_back();
      in = true;
      continue;
    }
    if (!in || line.size() < 13) continue;
    Trace& t = traces.back();
    std::string head(absl::StripAsciiWhitespace(line.substr(0, 11)));
    if (!head.empty() && head.back() == ':') {
      t.labels[head.substr(0, head.size() - 1)] =
          std::string(absl::StripAsciiWhitespace(line.substr(11)));
      continue;
    }
    if (!head.empty()) t.value = head;
    t.frames.emplace_back(absl::StripAsciiWhitespace(line.substr(11)));
  }
  if (!traces.empty() && traces.back().frames.empty()) traces.pop_back();  // the closing rule
  return traces;
}

// A frame of a leak in `cgoheap leaks --json` as -traces -lines prints it.
std::string FrameText(const Value& f) {
  std::string s = Field(f, "function").string_value();
  std::string file = Field(f, "file").string_value();
  if (file.rfind("./", 0) == 0) file = file.substr(2);  // pprof shows paths cleaned
  if (!file.empty()) {
    absl::StrAppend(&s, " ", file, ":",
                    static_cast<int>(Field(f, "line").number_value()));
  }
  if (Field(f, "inlined").bool_value()) absl::StrAppend(&s, " (inline)");
  return s;
}

// The traces `cgoheap leaks --json` says a leaks profile must hold, bytes or
// blocks as values.
std::vector<Trace> ExpectedTraces(const Value& leaks, bool bytes) {
  std::vector<Trace> out;
  for (const Value& l : Field(leaks, "leaks").list_value().values()) {
    Trace t;
    t.labels["kind"] = Field(l, "kind").string_value();
    t.value = absl::StrCat(static_cast<uint64_t>(Field(l, bytes ? "bytes" : "blocks").number_value()),
                           bytes ? "B" : "");
    for (const Value& f : Field(l, "frames").list_value().values()) t.frames.push_back(FrameText(f));
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<std::string> Sorted(const std::vector<Trace>& traces) {
  std::vector<std::string> out;
  for (const Trace& t : traces) out.push_back(absl::StrCat(t.labels.count("kind") ? t.labels.at("kind") : "", " ", t.Text()));
  std::sort(out.begin(), out.end());
  return out;
}

// Runs program under cgoheap run against d as service; its leaks as JSON.
Value RunAndLeaks(const Cgoheapd& d, const std::string& service, const std::string& program,
                  const std::vector<std::string>& run_flags = {},
                  const std::vector<std::string>& args = {}) {
  std::vector<std::string> argv = {"run", "--server=" + d.address(), "--service=" + service};
  argv.insert(argv.end(), run_flags.begin(), run_flags.end());
  argv.push_back("--");
  argv.push_back(Program(program));
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult run = Cli(argv);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  RunResult leaks = Cli({"leaks", "--server=" + d.address(), "--service=" + service, "--json"});
  EXPECT_EQ(leaks.exit_code, 0) << leaks.err;
  return ParseJson(leaks.out);
}

// The traces of a leaks profile from both ways of getting one: cgoheap
// pprof and the HTTP endpoint go tool pprof fetches itself. They must agree.
std::vector<Trace> LeakTraces(const Cgoheapd& d, const std::string& service, const TempDir& tmp,
                              bool bytes) {
  const std::string file = tmp.path() + "/" + service + ".pb.gz";
  RunResult w = Cli({"pprof", "--server=" + d.address(), "--service=" + service, "--leaks",
                     "--output=" + file});
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_NE(w.out.find("wrote " + file), std::string::npos) << w.out;
  std::vector<std::string> how = {"-traces", "-lines"};
  how.push_back(bytes ? "-unit=B" : "-sample_index=leak_objects");
  std::vector<std::string> from_file = how, from_http = how;
  from_file.push_back(file);
  from_http.push_back("http://" + d.metrics_address() + "/debug/pprof/leaks?service=" + service);
  RunResult a = GoPprof(from_file, tmp.path());
  RunResult b = GoPprof(from_http, tmp.path());
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(b.exit_code, 0) << b.err;
  std::vector<Trace> ta = ParseTraces(a.out), tb = ParseTraces(b.out);
  EXPECT_EQ(Sorted(ta), Sorted(tb)) << "cgoheap pprof and /debug/pprof/leaks differ";
  return ta;
}

TEST(PprofTest, LeaksProfileHoldsExactlyTheLeaksOfKnownPrograms) {
  TempDir data, tmp;
  Cgoheapd d(data.path(), {"--metrics=127.0.0.1:0"});
  struct Case {
    std::string program;
    std::vector<std::string> args;
  };
  // C malloc and C.CString (seed 2), C.CBytes through an inlined Go helper,
  // and stacks that cross into Go and back into C (callbacks).
  for (const Case& c : {Case{"seed_cmalloc", {}}, Case{"inlined", {}}, Case{"callback", {}}}) {
    SCOPED_TRACE(c.program);
    Value leaks = RunAndLeaks(d, c.program, c.program, {}, c.args);
    ASSERT_GT(Field(leaks, "leaks").list_value().values_size(), 0);
    EXPECT_EQ(Sorted(LeakTraces(d, c.program, tmp, true)), Sorted(ExpectedTraces(leaks, true)));
    EXPECT_EQ(Sorted(LeakTraces(d, c.program, tmp, false)), Sorted(ExpectedTraces(leaks, false)));
  }
  // Known answers, not only agreement with `cgoheap leaks`.
  std::string src = ProgramSource("seed_cmalloc");
  std::vector<std::string> seed = Sorted(LeakTraces(d, "seed_cmalloc", tmp, true));
  ASSERT_EQ(seed.size(), 2u);
  EXPECT_EQ(seed[0].rfind("exit 134217728B malloc | f1 " + src + ":" +
                              std::to_string(LineOf(src, "// CLEAK")) + " (inline)",
                          0),
            0u)
      << seed[0];
  EXPECT_NE(seed[0].find("main.main " + src + ":" + std::to_string(LineOf(src, "// CALLS-F1"))),
            std::string::npos)
      << seed[0];
  EXPECT_EQ(seed[1].rfind("exit 17B malloc", 0), 0u) << seed[1];
  EXPECT_NE(seed[1].find("main.main " + src + ":" + std::to_string(LineOf(src, "// LEAK: 17"))),
            std::string::npos)
      << seed[1];
  std::string isrc = ProgramSource("inlined");
  std::vector<Trace> inl = LeakTraces(d, "inlined", tmp, false);
  ASSERT_EQ(inl.size(), 1u);
  EXPECT_EQ(inl[0].value, "1000");
  const std::string helper = "main.leakOne " + isrc + ":" + std::to_string(LineOf(isrc, "// LEAK: 12"));
  const std::string caller = "main.batch " + isrc + ":" + std::to_string(LineOf(isrc, "// CALLS leakOne"));
  auto at = [&](const std::string& prefix) {
    for (size_t i = 0; i < inl[0].frames.size(); ++i) {
      if (inl[0].frames[i].rfind(prefix, 0) == 0) return static_cast<int>(i);
    }
    return -1;
  };
  ASSERT_GE(at(helper), 0) << inl[0].Text();
  EXPECT_EQ(at(caller), at(helper) + 1) << inl[0].Text();
}

TEST(PprofTest, TopShowsEachLeakAndNothingElse) {
  TempDir data, tmp;
  Cgoheapd d(data.path());
  Value leaks = RunAndLeaks(d, "seed", "seed_cmalloc");
  const std::string file = tmp.path() + "/leaks.pb.gz";
  ASSERT_EQ(Cli({"pprof", "--server=" + d.address(), "--leaks", "--output=" + file}).exit_code, 0);
  RunResult top = GoPprof({"-top", "-unit=B", "-nodefraction=0", file}, tmp.path());
  ASSERT_EQ(top.exit_code, 0) << top.err;
  EXPECT_NE(top.out.find("Type: leak_space"), std::string::npos) << top.out;
  EXPECT_NE(top.out.find("Showing nodes accounting for 134217745B, 100% of 134217745B total"),
            std::string::npos)
      << top.out;
  // Runtime and C-library allocations are left out, and the comments say so;
  // --all puts them back.
  EXPECT_NE(top.out.find("left out: "), std::string::npos) << top.out;
  EXPECT_NE(top.out.find("cgoheap pprof --all includes them"), std::string::npos) << top.out;
  const std::string all = tmp.path() + "/all.pb.gz";
  ASSERT_EQ(Cli({"pprof", "--server=" + d.address(), "--leaks", "--all", "--output=" + all}).exit_code, 0);
  RunResult all_top = GoPprof({"-top", "-unit=B", all}, tmp.path());
  ASSERT_EQ(all_top.exit_code, 0) << all_top.err;
  EXPECT_EQ(all_top.out.find("Showing nodes accounting for 134217745B, 100% of 134217745B total"),
            std::string::npos)
      << "--all must add the runtime's allocations\n" << all_top.out;
}

// What a wrapper held when it exec'd the program is no leak of the
// program's: left out of the profile, and the comments say so.
TEST(PprofTest, WhatAnImageHeldWhenReplacedByExecIsLeftOutAndSaid) {
  TempDir data, tmp;
  Cgoheapd d(data.path());
  RunResult run = Cli({"run", "--server=" + d.address(), "--service=wrapped", "--", "/bin/sh",
                       "-c", "exec \"$0\"", Program("forks")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (bool all : {false, true}) {
    SCOPED_TRACE(all ? "--all" : "");
    const std::string file = tmp.path() + (all ? "/all.pb.gz" : "/leaks.pb.gz");
    std::vector<std::string> argv = {"pprof", "--server=" + d.address(), "--leaks",
                                     "--output=" + file};
    if (all) argv.push_back("--all");
    ASSERT_EQ(Cli(argv).exit_code, 0);
    RunResult top = GoPprof({"-top", "-unit=B", "-nodefraction=0", file}, tmp.path());
    ASSERT_EQ(top.exit_code, 0) << top.err;
    const bool said = top.out.find("program image held when replaced by exec") != std::string::npos;
    EXPECT_EQ(said, !all) << top.out;
    // The program's one leak of 111 bytes, alone without --all.
    EXPECT_EQ(top.out.find("Showing nodes accounting for 111B, 100% of 111B total") !=
                  std::string::npos,
              !all)
        << top.out;
  }
}

TEST(PprofTest, WebUiDrawsTheFlameGraph) {
  TempDir data, tmp;
  Cgoheapd d(data.path());
  RunAndLeaks(d, "inlined", "inlined");
  const std::string file = tmp.path() + "/leaks.pb.gz";
  ASSERT_EQ(Cli({"pprof", "--server=" + d.address(), "--leaks", "--output=" + file}).exit_code, 0);
  // go tool pprof -http, as a user runs it (without opening a browser), on a
  // port that was free a moment ago (pprof prints the address as given, so
  // :0 would not say where it is).
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  const std::string listen = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  const std::string log = tmp.path() + "/web.log";
  pid_t web = SpawnBackground({"bash", "-c", std::string("HOME='") + tmp.path() + "' exec '" +
                                                 CGOHEAP_GO_PPROF + "' -http=" + listen +
                                                 " -no_browser '" + file + "' 2>&1"},
                              log);
  const std::string key = "Serving web UI on ";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ReadFile(log).find(key) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    usleep(50'000);
  }
  std::string text = ReadFile(log);
  ASSERT_NE(text.find(key), std::string::npos) << text;
  std::string url = text.substr(text.find(key) + key.size());
  url = url.substr(0, url.find('\n'));
  RunResult flame = RunProcess({"curl", "-sf", url + "/ui/flamegraph"});
  StopGroup(web, SIGTERM);
  ASSERT_EQ(flame.exit_code, 0) << flame.err;
  for (const char* fn : {"main.leakOne", "main.batch", "malloc"}) {
    EXPECT_NE(flame.out.find(fn), std::string::npos) << fn;
  }
}

TEST(PprofTest, SampledProfileCarriesTheEstimatesOfTheLeaksReport) {
  TempDir data, tmp;
  Cgoheapd d(data.path());
  // 8000 leaked blocks of 48 bytes among 2.4M allocations, 1 sample per
  // 4096 bytes (RunTest.SampledModeEstimatesTheLeakWithoutBias).
  Value leaks = RunAndLeaks(d, "sampled", "goroutines", {"--sample-bytes=4096"}, {"8", "100000"});
  const auto& list = Field(leaks, "leaks").list_value();
  ASSERT_EQ(list.values_size(), 1);
  const double bytes = Field(list.values(0), "bytes").number_value();
  const double blocks = Field(list.values(0), "blocks").number_value();
  EXPECT_NEAR(blocks, 8000, 8000 * 0.4);
  const std::string file = tmp.path() + "/sampled.pb.gz";
  ASSERT_EQ(Cli({"pprof", "--server=" + d.address(), "--service=sampled", "--leaks",
                 "--output=" + file}).exit_code, 0);
  RunResult raw = GoPprof({"-raw", file}, tmp.path());
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  // The one sample's values: the same estimates as the report.
  std::string expected = absl::StrCat(static_cast<uint64_t>(blocks), " ", static_cast<uint64_t>(bytes), ": ");
  bool found = false;
  for (const std::string& line : Lines(raw.out)) {
    std::string l(absl::StripAsciiWhitespace(line));
    std::vector<std::string> words = absl::StrSplit(l, ' ', absl::SkipEmpty());
    if (words.size() >= 3 && absl::StrCat(words[0], " ", words[1], " ") == expected) found = true;
  }
  EXPECT_TRUE(found) << "no sample " << expected << "in\n" << raw.out;
  EXPECT_NE(raw.out.find("Comment: sampled: about one allocation recorded per 4096 bytes"),
            std::string::npos)
      << raw.out;
  EXPECT_NE(raw.out.find("Period: 4096"), std::string::npos) << raw.out;
}

// Waits for a line of the program's output.
bool WaitFor(const std::string& path, const std::string& text, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (ReadFile(path).find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    usleep(20'000);
  }
  return true;
}

TEST(PprofTest, LiveHeapAndItsDiffOverTimeShowWhatGrows) {
  std::string src = ProgramSource("slowleak");
  TempDir data, tmp;
  // Samples of the live heap every 250 ms (a sixteenth of the window).
  Cgoheapd d(data.path(), {"--leak-window=4s", "--metrics=127.0.0.1:0"});
  std::string run_out = data.path() + "/run.txt";
  pid_t run = SpawnBackground({BinDir() + "/cgoheap", "run", "--server=" + d.address(),
                               "--service=slow", "--", Program("slowleak"), "60"},
                              run_out);
  ASSERT_TRUE(WaitFor(run_out, "READY", 30)) << "slowleak never got ready";
  // The steady stacks (start-up block, full cache) stay; the forgotten
  // request buffers grow. Three seconds on, a profile of 2 s ago is within
  // the samples kept.
  sleep(3);
  const std::string old_file = tmp.path() + "/old.pb.gz", new_file = tmp.path() + "/new.pb.gz";
  RunResult old_w = Cli({"pprof", "--server=" + d.address(), "--service=slow", "--ago=2s",
                         "--output=" + old_file});
  ASSERT_EQ(old_w.exit_code, 0) << old_w.err;
  sleep(1);
  RunResult new_w = Cli({"pprof", "--server=" + d.address(), "--service=slow",
                         "--output=" + new_file});
  ASSERT_EQ(new_w.exit_code, 0) << new_w.err;

  // The live heap now: the cache (64 blocks of 4096) and the start-up block
  // exactly, at their lines.
  RunResult top = GoPprof({"-top", "-lines", "-unit=B", "-nodefraction=0", new_file}, tmp.path());
  ASSERT_EQ(top.exit_code, 0) << top.err;
  EXPECT_NE(top.out.find("Type: inuse_space"), std::string::npos) << top.out;
  auto row = [](const std::string& out, const std::string& frame) {
    for (const std::string& line : Lines(out)) {
      if (line.find(frame) != std::string::npos) return line;
    }
    return std::string();
  };
  const std::string cache = "cache_put " + src + ":" + std::to_string(LineOf(src, "// CACHE"));
  const std::string startup = "init_once " + src + ":" + std::to_string(LineOf(src, "// STARTUP"));
  const std::string churn = "handle " + src + ":" + std::to_string(LineOf(src, "// CHURN"));
  EXPECT_NE(row(top.out, cache).find(" 262144B "), std::string::npos) << top.out;
  EXPECT_NE(row(top.out, startup).find(" 8192B "), std::string::npos) << top.out;
  RunResult objects = GoPprof({"-top", "-lines", "-sample_index=inuse_objects", "-nodefraction=0", new_file},
                              tmp.path());
  EXPECT_NE(row(objects.out, cache).find(" 64 "), std::string::npos) << objects.out;

  // The same from the HTTP endpoint, as of 2 s ago too.
  RunResult http = GoPprof({"-top", "-lines", "-unit=B", "-nodefraction=0",
                            "http://" + d.metrics_address() + "/debug/pprof/heap?service=slow&ago=2s"},
                           tmp.path());
  ASSERT_EQ(http.exit_code, 0) << http.err;
  EXPECT_NE(row(http.out, cache).find(" 262144B "), std::string::npos) << http.out;
  EXPECT_NE(http.out.find("from the samples kept for growth detection"), std::string::npos) << http.out;

  // What grew: the churn's forgotten buffers, and nothing else.
  RunResult diff = GoPprof({"-top", "-lines", "-unit=B", "-nodefraction=0",
                            "-diff_base=" + old_file, new_file},
                           tmp.path());
  ASSERT_EQ(diff.exit_code, 0) << diff.err;
  std::string grown = row(diff.out, churn);
  ASSERT_FALSE(grown.empty()) << "the growing stack is missing from the diff\n" << diff.out;
  std::vector<std::string> cols = absl::StrSplit(grown, ' ', absl::SkipEmpty());
  ASSERT_GE(cols.size(), 5u);
  EXPECT_NE(cols[3], "0") << "the growing stack grew\n" << diff.out;
  EXPECT_EQ(row(diff.out, cache), "") << "a steady stack shows in the diff\n" << diff.out;
  EXPECT_EQ(row(diff.out, startup), "") << "a steady stack shows in the diff\n" << diff.out;

  // A time older than the history kept gets an error that says what to ask.
  RunResult too_old = Cli({"pprof", "--server=" + d.address(), "--ago=1h", "--output=" + old_file});
  EXPECT_EQ(too_old.exit_code, 1);
  EXPECT_NE(too_old.err.find("keeps the live heap's history for its leak window (--leak-window=4s)"),
            std::string::npos)
      << too_old.err;
  EXPECT_EQ(StopGroup(run, SIGINT) >= 0, true);
}

TEST(PprofTest, BadRequestsSayWhatToDo) {
  TempDir data, tmp;
  Cgoheapd d(data.path(), {"--metrics=127.0.0.1:0"});
  RunResult no_output = Cli({"pprof", "--server=" + d.address()});
  EXPECT_EQ(no_output.exit_code, 2);
  EXPECT_NE(no_output.err.find("--output=FILE"), std::string::npos) << no_output.err;
  RunResult bad_id = Cli({"pprof", "--server=" + d.address(), "--process=xyz", "--output=-"});
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_NE(bad_id.err.find("is not hex"), std::string::npos) << bad_id.err;
  RunResult unknown = Cli({"pprof", "--server=" + d.address(), "--process=abc", "--output=-"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no process abc on this server"), std::string::npos) << unknown.err;
  RunResult both = Cli({"pprof", "--server=" + d.address(), "--leaks", "--ago=1m", "--output=-"});
  EXPECT_EQ(both.exit_code, 2);
  const std::string base = "http://" + d.metrics_address();
  RunResult param = RunProcess({"curl", "-s", "-w", "%{http_code}", base + "/debug/pprof/heap?sevice=x"});
  EXPECT_NE(param.out.find("unknown parameter sevice"), std::string::npos) << param.out;
  EXPECT_NE(param.out.find("400"), std::string::npos) << param.out;
  RunResult ago = RunProcess({"curl", "-s", "-w", "%{http_code}", base + "/debug/pprof/heap?ago=soon"});
  EXPECT_NE(ago.out.find("?ago=soon"), std::string::npos) << ago.out;
  RunResult post = RunProcess({"curl", "-s", "-X", "POST", "-w", "%{http_code}", base + "/metrics"});
  EXPECT_NE(post.out.find("405"), std::string::npos) << post.out;
  // Nothing stored yet: an empty profile that pprof still opens.
  const std::string empty = tmp.path() + "/empty.pb.gz";
  RunResult w = Cli({"pprof", "--server=" + d.address(), "--output=" + empty});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  EXPECT_NE(w.out.find("0 stacks from 0 processes"), std::string::npos) << w.out;
  RunResult top = GoPprof({"-top", empty}, tmp.path());
  EXPECT_EQ(top.exit_code, 0) << top.err;
}

}  // namespace
}  // namespace cgoheap::testing
