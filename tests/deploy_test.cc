// deploy/: the Grafana dashboard and the alert rules only name metrics that
// cgoheapd exports, and cgoheapd's /metrics passes `promtool check metrics`.
#include <unistd.h>

#include <chrono>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <prometheus/collectable.h>

#include "server/metrics/metrics.h"
#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

std::set<std::string> ExportedNames() {
  server::ServerMetrics metrics;
  v1::ListProcessesResponse list;
  auto* p = list.add_processes();
  p->mutable_hello()->set_service("s");
  p->set_state("running");
  absl::flat_hash_map<std::string, server::ServiceSuspects> suspects;
  suspects["s"].top = {{"0000000000000001", "main.f /f.go:1", 1}};
  metrics.RefreshFleet(list, suspects);  // every family gets a series
  metrics.ObserveQuery("Leaks", 0.001);
  std::set<std::string> names;
  for (const auto& family : metrics.registry()->Collect()) {
    names.insert(family.name);
    if (family.type == prometheus::MetricType::Histogram) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(family.name + suffix);
    }
  }
  return names;
}

std::set<std::string> NamedIn(const std::string& text) {
  std::set<std::string> out;
  std::regex metric("cgoheap_[a-z_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), metric);
       it != std::sregex_iterator(); ++it) {
    out.insert(it->str());
  }
  return out;
}

std::string DeployFile(const std::string& rel) {
  return ReadFile(std::string(CGOHEAP_SOURCE_DIR) + "/deploy/" + rel);
}

// The YAML without its comments (which name files, not metrics).
std::string WithoutComments(const std::string& yaml) {
  return std::regex_replace(yaml, std::regex("(^|\\n)\\s*#[^\\n]*"), "$1");
}

TEST(DeployTest, DashboardIsValidJsonAndQueriesExportedMetrics) {
  google::protobuf::Value dash = ParseJson(DeployFile("grafana/cgoheap.json"));
  const auto& panels = dash.struct_value().fields().at("panels").list_value();
  ASSERT_GE(panels.values_size(), 8);
  std::set<std::string> exported = ExportedNames();
  int queries = 0;
  for (const auto& panel : panels.values()) {
    for (const auto& target : panel.struct_value().fields().at("targets").list_value().values()) {
      std::string expr = target.struct_value().fields().at("expr").string_value();
      std::set<std::string> named = NamedIn(expr);
      EXPECT_FALSE(named.empty()) << expr;
      for (const std::string& m : named) EXPECT_TRUE(exported.contains(m)) << m << " in " << expr;
      ++queries;
    }
  }
  EXPECT_GE(queries, 10);
  for (const char* needed : {"cgoheap_live_bytes", "cgoheap_leak_suspect_bytes",
                             "cgoheap_ack_latency_seconds_bucket", "cgoheap_ingest_events_total"}) {
    EXPECT_TRUE(NamedIn(DeployFile("grafana/cgoheap.json")).contains(needed)) << needed;
  }
}

TEST(DeployTest, AlertRulesNameExportedMetrics) {
  std::set<std::string> exported = ExportedNames();
  std::set<std::string> named = NamedIn(WithoutComments(DeployFile("prometheus/cgoheap_rules.yml")));
  EXPECT_GE(named.size(), 5u);
  for (const std::string& m : named) EXPECT_TRUE(exported.contains(m)) << m;
}

TEST(DeployTest, LiveMetricsPassPromtool) {
  TempDir data;
  Cgoheapd d(data.path(), {"--metrics=127.0.0.1:0"});
  RunResult run = RunProcess({BinDir() + "/cgoheap", "run", "--server=" + d.address(),
                              "--service=metrics", "--", Program("seed_cstring")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_FALSE(d.metrics_address().empty());
  // The fleet gauges follow the server's refresh (every 2 s at most).
  const std::string exited = "cgoheap_processes{service=\"metrics\",state=\"exited\"} 1";
  RunResult check;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  do {
    check = RunProcess({"sh", "-c", "curl -sf http://" + d.metrics_address() +
                                        "/metrics | tee /dev/stderr | promtool check metrics"});
  } while (check.err.find(exited) == std::string::npos &&
           std::chrono::steady_clock::now() < deadline && usleep(200'000) == 0);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.err.find(exited), std::string::npos) << check.err;
  // Which build runs, as Prometheus' convention has it (passes promtool too).
  std::smatch build;
  ASSERT_TRUE(std::regex_search(check.err, build,
                                std::regex(R"(cgoheap_build_info\{([^}]*)\} 1\n)")))
      << check.err;
  std::string labels = build[1];
  EXPECT_TRUE(std::regex_search(labels, std::regex(R"(commit="[0-9a-f]{12}(-dirty)?")"))) << labels;
  EXPECT_NE(labels.find("version=\"0.1.0\""), std::string::npos) << labels;
  EXPECT_NE(labels.find("rocksdb=\"7."), std::string::npos) << labels;
  EXPECT_NE(labels.find("grpc=\"1."), std::string::npos) << labels;
}

// --version says which build this is: version, commit, libraries.
TEST(DeployTest, BothProgramsSayTheirVersion) {
  auto expect_version = [](const std::string& program, const std::string& libraries) {
    RunResult r = RunProcess({BinDir() + "/" + program, "--version"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_TRUE(std::regex_match(
        r.out, std::regex(program + R"( 0\.1\.0 \(commit ([0-9a-f]{12}(-dirty)?|unknown \(not built from a git checkout\))\)\n)" +
                          "libraries: " + libraries + "\n")))
        << r.out;
  };
  expect_version("cgoheap", R"(gRPC 1\.[0-9.]+, protobuf 3\.[0-9.]+, elfutils 0\.[0-9]+, )"
                            R"(libunwind 1\.[0-9.]+, abseil [0-9]+)");
  expect_version("cgoheapd", R"(gRPC 1\.[0-9.]+, protobuf 3\.[0-9.]+, RocksDB 7\.[0-9.]+, )"
                             R"(prometheus-cpp 1\.[0-9.]+, abseil [0-9]+)");
}

// What ships is built hardened (CMakeLists.txt): every binary calls the
// stack protector's check, binds every symbol at start-up (full RELRO), and
// the forwarder's and the agent's fortified libc calls are there.
TEST(DeployTest, ReleaseBinariesAreHardened) {
  if (!CGOHEAP_HARDENED) GTEST_SKIP() << "a sanitizer or Debug build: not hardened by design";
  for (std::string binary : {BinDir() + "/cgoheap", BinDir() + "/cgoheapd",
                             std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent.so"}) {
    RunResult syms = RunProcess({"readelf", "--wide", "--dyn-syms", binary});
    ASSERT_EQ(syms.exit_code, 0) << syms.err;
    EXPECT_NE(syms.out.find("__stack_chk_fail"), std::string::npos) << binary;
    EXPECT_NE(syms.out.find("_chk@"), std::string::npos) << binary << ": no fortified call";
    RunResult dynamic = RunProcess({"readelf", "--wide", "--dynamic", binary});
    EXPECT_NE(dynamic.out.find("BIND_NOW"), std::string::npos) << binary;
  }
}

// The agent is loaded into every program it watches: it defines the
// allocator's entry points and nothing else, and carries no C++ runtime.
// (One std::string_view::starts_with in code the agent shares once pulled in
// libstdc++'s exception support, statically: some 780 exported C++ symbols,
// and a 72,704-byte allocation in every program before main.)
TEST(DeployTest, TheAgentDefinesOnlyTheAllocatorsEntryPoints) {
  const std::string agent = std::string(CGOHEAP_AGENT_DIR) + "/libcgoheap_agent.so";
  RunResult syms = RunProcess({"nm", "--dynamic", "--defined-only", agent});
  ASSERT_EQ(syms.exit_code, 0) << syms.err;
  std::set<std::string> defined;
  std::istringstream lines(syms.out);
  for (std::string line; std::getline(lines, line);) {
    defined.insert(line.substr(line.find_last_of(' ') + 1));
  }
  const std::set<std::string> expected = {
      "aligned_alloc", "calloc",  "free",         "malloc", "malloc_usable_size", "memalign",
      "posix_memalign", "pvalloc", "realloc", "reallocarray", "valloc"};
  EXPECT_EQ(defined, expected) << syms.out.substr(0, 2000);
}

}  // namespace
}  // namespace cgoheap::testing
