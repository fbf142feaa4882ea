// cgoheapd's bounds: a flood beyond its limits is refused with
// RESOURCE_EXHAUSTED (counted, with what to do), everything acknowledged
// before stays, and the server's memory stays bounded; retention forgets
// ended processes, and the disk shrinks; a process whose forwarder is gone
// is lost, a quiet one is not.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cgoheap.grpc.pb.h"
#include "proto/stack_id.h"
#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

v1::Stack MakeStack(int n) {
  v1::Stack s;
  s.add_frames()->set_function("malloc");
  v1::Frame* f = s.add_frames();
  f->set_function(absl::StrCat("main.site", n));
  f->set_file("/src/main.go");
  f->set_line(n);
  f->set_go(true);
  s.set_id(StackIdOf(s));
  return s;
}

// One stream of process `id`: a hello, then `batches`; returns the status the
// stream ended with and the last seq acknowledged.
struct Outcome {
  grpc::Status status;
  uint64_t acked = 0;
};
Outcome Stream(const std::shared_ptr<grpc::Channel>& channel, uint64_t id,
               const std::vector<v1::AgentMessage>& batches) {
  auto stub = v1::Ingest::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->Stream(&ctx);
  Outcome out;
  v1::AgentMessage hello;
  hello.mutable_hello()->set_process_id(id);
  hello.mutable_hello()->set_service("flood");
  hello.mutable_hello()->set_pid(static_cast<int32_t>(id));
  v1::IngestAck ack;
  if (stream->Write(hello) && stream->Read(&ack)) {
    out.acked = ack.acked_seq();
    for (const v1::AgentMessage& m : batches) {
      if (!stream->Write(m) || !stream->Read(&ack)) break;
      out.acked = ack.acked_seq();
    }
  }
  stream->WritesDone();
  out.status = stream->Finish();
  return out;
}

// `allocs` allocations at distinct addresses from `first_addr`, over stacks
// first..first+nstacks-1 (defined in this batch when define is set).
v1::AgentMessage Batch(uint64_t seq, uint64_t first_addr, int allocs, int first_stack, int nstacks,
                       bool define) {
  v1::AgentMessage m;
  m.set_seq(seq);
  v1::EventBatch* b = m.mutable_batch();
  std::vector<uint64_t> ids;
  for (int i = 0; i < nstacks; ++i) {
    v1::Stack s = MakeStack(first_stack + i);
    ids.push_back(s.id());
    if (define) *b->add_new_stacks() = s;
  }
  for (int i = 0; i < allocs; ++i) {
    b->add_kinds(v1::EVENT_KIND_ALLOC);
    b->add_addresses(first_addr + 16 * i);
    b->add_sizes(32);
    b->add_stack_ids(ids[i % ids.size()]);
  }
  return m;
}

uint64_t RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

TEST(LimitsTest, FloodBeyondTheLimitsIsRefusedAndWhatWasAcknowledgedStays) {
  TempDir data;
  Cgoheapd d(data.path(), {"--max-live-blocks=20000", "--max-processes=4",
                           "--max-process-stacks=50", "--max-watchers=1",
                           "--metrics=127.0.0.1:0"});
  auto channel = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());

  // 10,000 blocks are taken; 15,000 more would pass the 20,000 limit.
  Outcome o = Stream(channel, 1, {Batch(1, 0x100000, 10000, 0, 10, true),
                                  Batch(2, 0x900000, 15000, 0, 10, false)});
  EXPECT_EQ(o.acked, 1u);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(o.status.error_message().find("--max-live-blocks"), std::string::npos)
      << o.status.error_message();
  // The process goes on from where it was: seq 1 is there.
  o = Stream(channel, 1, {Batch(2, 0x900000, 5000, 0, 10, false)});
  EXPECT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.acked, 2u);

  // Stacks one process may define.
  o = Stream(channel, 2, {Batch(1, 0x100000, 60, 100, 60, true)});
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(o.status.error_message().find("--max-process-stacks"), std::string::npos);

  // Processes: 1 and 2 exist; 3 and 4 fit; 5 does not.
  EXPECT_TRUE(Stream(channel, 3, {}).status.ok());
  EXPECT_TRUE(Stream(channel, 4, {}).status.ok());
  o = Stream(channel, 5, {});
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(o.status.error_message().find("--max-processes"), std::string::npos);

  // A flood: 200 more batches of 15,000 blocks, each refused. Memory stays
  // where the accepted 15,000 blocks put it.
  const uint64_t before_kb = RssKb(d.pid());
  std::vector<std::thread> flood;
  for (int t = 0; t < 4; ++t) {
    flood.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        Stream(channel, 3 + t % 2, {Batch(1, 0x10000000 * (t + 1), 15000, 0, 10, true)});
      }
    });
  }
  for (auto& th : flood) th.join();
  const uint64_t after_kb = RssKb(d.pid());
  EXPECT_LT(after_kb, before_kb + 64 * 1024)
      << "cgoheapd grew from " << before_kb << " kB to " << after_kb << " kB during the flood";

  // Watch streams: one may be open.
  auto query = v1::Query::NewStub(channel);
  grpc::ClientContext first_ctx;
  auto first = query->Watch(&first_ctx, v1::WatchRequest());
  // The first stream is open once the server has counted it: retry the
  // second until it is refused (or give up after 10 s).
  grpc::Status second;
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
    auto r = query->Watch(&ctx, v1::WatchRequest());
    v1::Leak leak;
    while (r->Read(&leak)) {
    }
    second = r->Finish();
    if (second.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
  }
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << second.error_message();
  first_ctx.TryCancel();
  first->Finish();

  // What was acknowledged is all there.
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  EXPECT_NE(ps.out.find("\"live_blocks\":15000,"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("\"live_bytes\":480000,"), std::string::npos) << ps.out;

  RunResult metrics = RunProcess({"curl", "-sf", "http://" + d.metrics_address() + "/metrics"});
  ASSERT_EQ(metrics.exit_code, 0);
  for (const char* limit : {"live_blocks", "process_stacks", "processes", "watchers"}) {
    std::string series = absl::StrCat("cgoheap_limit_refusals_total{limit=\"", limit, "\"} ");
    size_t at = metrics.out.find(series);
    ASSERT_NE(at, std::string::npos) << series;
    EXPECT_GE(std::stod(metrics.out.substr(at + series.size())), 1) << series;
  }
}

}  // namespace
}  // namespace cgoheap::testing

namespace cgoheap::testing {
namespace {

uint64_t DirBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

TEST(RetentionTest, EndedProcessesAreForgottenAndTheDiskShrinks) {
  TempDir data;
  Cgoheapd d(data.path(), {"--retention=5s"});
  auto channel = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());
  // 300 processes with 48 KiB of arguments each, a leak each, ended.
  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&, t] {
      for (int i = 0; i < 75; ++i) {
        uint64_t id = 1000 + t * 75 + i;
        auto stub = v1::Ingest::NewStub(channel);
        grpc::ClientContext ctx;
        auto stream = stub->Stream(&ctx);
        v1::AgentMessage m;
        m.mutable_hello()->set_process_id(id);
        m.mutable_hello()->set_service("retained");
        for (int a = 0; a < 48; ++a) m.mutable_hello()->add_args(std::string(1024, 'a' + a % 26));
        v1::IngestAck ack;
        stream->Write(m);
        stream->Read(&ack);
        v1::AgentMessage b = Batch(1, 0x1000, 10, static_cast<int>(id), 1, true);
        stream->Write(b);
        stream->Read(&ack);
        v1::AgentMessage end;
        end.set_seq(2);
        end.mutable_end()->set_exited(true);
        stream->Write(end);
        stream->Read(&ack);
        stream->WritesDone();
        stream->Finish();
      }
    });
  }
  for (auto& th : senders) th.join();
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address(), "--json"});
  const uint64_t before = DirBytes(data.path());
  ASSERT_GT(before, 10u << 20) << "300 x 48 KiB of arguments are on disk";
  // Forgotten once 5 s old (checked every 10 s).
  std::string out;
  for (int i = 0; i < 60; ++i) {
    ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address()});
    out = ps.out;
    if (out.find("(no processes)") != std::string::npos) break;
    usleep(500'000);
  }
  EXPECT_NE(out.find("(no processes)"), std::string::npos) << out;
  RunResult leaks = RunProcess({BinDir() + "/cgoheap", "leaks", "--server=" + d.address()});
  EXPECT_EQ(leaks.out.find("main.site"), std::string::npos) << leaks.out;
  const uint64_t after = DirBytes(data.path());
  std::cout << "data directory: " << before << " bytes with the processes, " << after
            << " once forgotten\n";
  EXPECT_LT(after, before / 2) << "data directory: " << before << " bytes before, " << after
                               << " after";
  // A restart finds nothing of them either.
  d.Stop();
  Cgoheapd again(data.path(), {"--retention=5s"});
  ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + again.address()});
  EXPECT_NE(ps.out.find("(no processes)"), std::string::npos) << ps.out;
}

}  // namespace
}  // namespace cgoheap::testing

namespace cgoheap::testing {
namespace {

// The state `cgoheap ps` shows for the process running `command`, or "".
std::string StateOf(const std::string& server, const std::string& command) {
  RunResult ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + server});
  std::istringstream lines(ps.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find(command) == std::string::npos) continue;
    for (const char* state : {"running", "lost", "exited", "killed", "ended"}) {
      if (line.find(std::string(" ") + state + " ") != std::string::npos) return state;
    }
  }
  return "";
}

TEST(LivenessTest, AQuietProcessStaysRunningAndOneWhoseForwarderDiedIsLost) {
  TempDir data, rings;
  Cgoheapd d(data.path(), {"--lost-after=2s"});
  // sleep makes no allocation for 8 s; its forwarder says it is alive. (The
  // rings go under TMPDIR, not /dev/shm: see the end.)
  pid_t run = SpawnBackground({"/usr/bin/env", "TMPDIR=" + rings.path(), BinDir() + "/cgoheap",
                               "run", "--server=" + d.address(), "--heartbeat=200ms", "--",
                               "/bin/sleep", "8"});
  std::string state;
  for (int i = 0; i < 100 && state.empty(); ++i) {
    usleep(100'000);
    state = StateOf(d.address(), "/bin/sleep");
  }
  ASSERT_EQ(state, "running");
  usleep(3'500'000);  // longer than --lost-after, without a single event
  EXPECT_EQ(StateOf(d.address(), "/bin/sleep"), "running");
  // The forwarder dies; the program goes on.
  kill(run, SIGKILL);
  for (int i = 0; i < 60 && state != "lost"; ++i) {
    usleep(100'000);
    state = StateOf(d.address(), "/bin/sleep");
  }
  EXPECT_EQ(state, "lost");
  StopGroup(run, SIGKILL);
  // The killed launcher could not remove its ring directory (in /dev/shm,
  // i.e. memory, by default); the next run does.
  auto ring_dirs = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(rings.path())) {
      n += e.path().filename().string().rfind("cgoheap-rings-", 0) == 0;
    }
    return n;
  };
  EXPECT_EQ(ring_dirs(), 1);
  RunResult next = RunProcess(
      {BinDir() + "/cgoheap", "run", "--server=" + d.address(), "--", "/bin/true"},
      {"TMPDIR=" + rings.path()});
  EXPECT_EQ(next.exit_code, 0) << next.err;
  EXPECT_EQ(ring_dirs(), 0);
}

}  // namespace
}  // namespace cgoheap::testing
