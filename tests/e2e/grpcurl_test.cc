// The query API driven by grpcurl (./dev.sh test builds it from the Go module
// proxy at a pinned version), through server reflection alone: what a user
// with nothing of ours but the address can do.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

using google::protobuf::Value;

// grpcurl prints 64-bit integers as JSON strings (proto3's JSON mapping),
// fields under their proto names.
double Number(const Value& v) {
  return v.kind_case() == Value::kStringValue ? std::stod(v.string_value()) : v.number_value();
}

class GrpcurlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(CGOHEAP_GRPCURL)) {
      GTEST_SKIP() << "no grpcurl at " << CGOHEAP_GRPCURL
                   << ": ./dev.sh test builds it (go install from the Go module proxy)";
    }
  }
  static RunResult Grpcurl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {CGOHEAP_GRPCURL};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, {}, std::chrono::seconds(60));
  }
};

TEST_F(GrpcurlTest, ListsDescribesAndCallsEveryQueryMethod) {
  TempDir data;
  Cgoheapd d(data.path());
  ASSERT_EQ(Cli({"run", "--server=" + d.address(), "--service=seed", "--",
                 Program("seed_cmalloc")}).exit_code, 0);

  RunResult list = Grpcurl({"-plaintext", d.address(), "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  for (const char* service : {"cgoheap.v1.Query", "cgoheap.v1.Ingest", "grpc.health.v1.Health"}) {
    EXPECT_NE(list.out.find(service), std::string::npos) << list.out;
  }
  RunResult describe = Grpcurl({"-plaintext", d.address(), "describe", "cgoheap.v1.Query"});
  ASSERT_EQ(describe.exit_code, 0) << describe.err;
  for (const char* method : {"rpc ListProcesses", "rpc Leaks", "rpc Top", "rpc Profile", "rpc Watch"}) {
    EXPECT_NE(describe.out.find(method), std::string::npos) << describe.out;
  }
  RunResult health = Grpcurl({"-plaintext", d.address(), "grpc.health.v1.Health/Check"});
  ASSERT_EQ(health.exit_code, 0) << health.err;
  EXPECT_NE(health.out.find("SERVING"), std::string::npos) << health.out;

  RunResult ps = Grpcurl({"-plaintext", "-d", "{}", d.address(), "cgoheap.v1.Query/ListProcesses"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  const Value procs = ParseJson(ps.out);
  ASSERT_EQ(Field(procs, "processes").list_value().values_size(), 1) << ps.out;
  EXPECT_EQ(Field(Field(Field(procs, "processes").list_value().values(0), "hello"), "service")
                .string_value(),
            "seed");

  // Leaks: the same leaks as `cgoheap leaks --json`, field for field.
  RunResult leaks = Grpcurl({"-plaintext", "-d", R"({"service": "seed"})", d.address(),
                             "cgoheap.v1.Query/Leaks"});
  ASSERT_EQ(leaks.exit_code, 0) << leaks.err;
  RunResult ours = Cli({"leaks", "--server=" + d.address(), "--service=seed", "--json"});
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  const Value theirs = ParseJson(leaks.out), mine = ParseJson(ours.out);
  const auto& a = Field(theirs, "leaks").list_value();
  const auto& b = Field(mine, "leaks").list_value();
  ASSERT_EQ(a.values_size(), 2) << leaks.out;
  ASSERT_EQ(a.values_size(), b.values_size());
  for (int i = 0; i < a.values_size(); ++i) {
    const Value& x = a.values(i);
    const Value& y = b.values(i);
    EXPECT_EQ(Field(x, "kind").string_value(), Field(y, "kind").string_value());
    EXPECT_EQ(Number(Field(x, "bytes")), Number(Field(y, "bytes")));
    EXPECT_EQ(Number(Field(x, "blocks")), Number(Field(y, "blocks")));
    EXPECT_EQ(Number(Field(x, "processes")), Number(Field(y, "processes")));
    ASSERT_EQ(Field(x, "process_ids").list_value().values_size(), 1) << leaks.out;
    ASSERT_EQ(Field(y, "process_ids").list_value().values_size(), 1) << ours.out;
    EXPECT_EQ(Field(x, "process_ids").list_value().values(0).string_value(),
              Field(y, "process_ids").list_value().values(0).string_value());
    const auto& fx = Field(Field(x, "stack"), "frames").list_value();
    const auto& fy = Field(y, "frames").list_value();
    ASSERT_EQ(fx.values_size(), fy.values_size());
    for (int f = 0; f < fx.values_size(); ++f) {
      EXPECT_EQ(Field(fx.values(f), "function").string_value(),
                Field(fy.values(f), "function").string_value());
      EXPECT_EQ(Field(fx.values(f), "file").string_value(), Field(fy.values(f), "file").string_value());
      EXPECT_EQ(Number(Field(fx.values(f), "line")), Number(Field(fy.values(f), "line")));
    }
  }
  EXPECT_EQ(Number(Field(a.values(0), "bytes")), 17);  // lost, then the reachable 128 MiB
  EXPECT_EQ(Number(Field(a.values(1), "bytes")), 134217728);
  EXPECT_EQ(Number(Field(a.values(1), "reachable_bytes")), 134217728);

  // Top: the live heap of running processes; the one process has ended, so
  // none (proto3's JSON leaves out empty fields), as `cgoheap top` says.
  RunResult top = Grpcurl({"-plaintext", "-d", R"({"by": "line"})", d.address(), "cgoheap.v1.Query/Top"});
  ASSERT_EQ(top.exit_code, 0) << top.err;
  const Value top_doc = ParseJson(top.out);
  EXPECT_EQ(Field(top_doc, "entries").list_value().values_size(), 0) << top.out;
  EXPECT_EQ(Number(Field(top_doc, "processes")), 0) << top.out;
  RunResult our_top = Cli({"top", "--server=" + d.address(), "--by=line", "--json"});
  ASSERT_EQ(our_top.exit_code, 0) << our_top.err;
  EXPECT_EQ(Number(Field(ParseJson(our_top.out), "processes")), 0) << our_top.out;
  RunResult profile = Grpcurl({"-plaintext", "-d", R"({"leaks": true})", d.address(),
                               "cgoheap.v1.Query/Profile"});
  ASSERT_EQ(profile.exit_code, 0) << profile.err;
  EXPECT_EQ(Number(Field(ParseJson(profile.out), "samples")), 2) << profile.out;
  // A bad request gets the server's message.
  RunResult bad = Grpcurl({"-plaintext", "-d", R"({"processId": "xyz"})", d.address(),
                           "cgoheap.v1.Query/Leaks"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("is not hex"), std::string::npos) << bad.err;
}

TEST_F(GrpcurlTest, WatchStreamsEachFindingAsItIsMade) {
  TempDir data;
  Cgoheapd d(data.path());
  const std::string out = data.path() + "/watch.jsonl";
  pid_t watch = SpawnBackground({CGOHEAP_GRPCURL, "-plaintext", "-d", R"({"service": "w"})",
                                 d.address(), "cgoheap.v1.Query/Watch"},
                                out);
  // A program leaks; again, until the stream (opened in the background,
  // when grpcurl gets to it) has carried a finding.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ReadFile(out).find("134217728") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    ASSERT_EQ(Cli({"run", "--server=" + d.address(), "--service=w", "--", Program("seed_cmalloc")})
                  .exit_code,
              0);
    usleep(200'000);
  }
  StopGroup(watch, SIGTERM);
  const std::string got = ReadFile(out);
  EXPECT_NE(got.find("\"kind\": \"exit\""), std::string::npos) << got;
  EXPECT_NE(got.find("\"bytes\": \"134217728\""), std::string::npos) << got;
}

TEST_F(GrpcurlTest, TokensGoInAHeader) {
  TempDir data;
  const std::string token = "query-token-for-grpcurl-0123456789";
  const std::string file = data.path() + "/query.token";
  {
    std::vector<std::string> write = {"bash", "-c", "printf '%s\\n' " + token + " > " + file};
    ASSERT_EQ(RunProcess(write).exit_code, 0);
  }
  Cgoheapd d(data.path() + "/db", {"--query-token-file=" + file});
  RunResult refused = Grpcurl({"-plaintext", "-d", "{}", d.address(), "cgoheap.v1.Query/ListProcesses"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("needs a token of the query role"), std::string::npos) << refused.err;
  RunResult ok = Grpcurl({"-plaintext", "-H", "authorization: Bearer " + token, "-d", "{}",
                          d.address(), "cgoheap.v1.Query/ListProcesses"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  // Reflection too (it lists command lines' shapes: query role).
  EXPECT_NE(Grpcurl({"-plaintext", d.address(), "list"}).exit_code, 0);
  RunResult list = Grpcurl({"-plaintext", "-H", "authorization: Bearer " + token, d.address(), "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("cgoheap.v1.Query"), std::string::npos) << list.out;
}

}  // namespace
}  // namespace cgoheap::testing
