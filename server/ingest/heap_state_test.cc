#include "server/ingest/heap_state.h"

#include <gtest/gtest.h>

#include <rocksdb/db.h>

#include <functional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/sampling.h"
#include "proto/stack_id.h"
#include "server/ingest/estimate.h"
#include "server/query/reports.h"
#include "server/storage/store.h"
#include "tests/testing/test_util.h"

namespace cgoheap::server {
namespace {

// Tests name stacks with short symbolic ids; the server takes a stack only
// under its real id (the digest of its frames, proto/stack_id.h), so each
// stack made here gets its real id, and Batch() turns the symbolic ids of
// events into the real ones.
constexpr uint64_t kUserStack = 0x1111, kRuntimeStack = 0x2222;
absl::flat_hash_map<uint64_t, uint64_t>& RealIds() {
  static auto* ids = new absl::flat_hash_map<uint64_t, uint64_t>;
  return *ids;
}
v1::Stack WithRealId(uint64_t symbolic, v1::Stack s) {
  s.set_id(StackIdOf(s));
  RealIds()[symbolic] = s.id();
  return s;
}

v1::Stack UserStack() {
  v1::Stack s;
  s.add_frames()->set_function("malloc");
  v1::Frame* f = s.add_frames();
  f->set_function("main.main");
  f->set_file("/src/main.go");
  f->set_line(12);
  f->set_go(true);
  return WithRealId(kUserStack, std::move(s));
}

v1::Stack RuntimeStack() {
  v1::Stack s;
  s.add_frames()->set_function("malloc");
  v1::Frame* f = s.add_frames();
  f->set_function("runtime.newm1");
  f->set_go(true);
  return WithRealId(kRuntimeStack, std::move(s));
}

v1::AgentMessage Hello(uint64_t id, const std::string& service) {
  v1::AgentMessage m;
  m.mutable_hello()->set_process_id(id);
  m.mutable_hello()->set_service(service);
  return m;
}

struct Ev {
  bool alloc;
  uint64_t addr, size, stack;
};

v1::AgentMessage Batch(uint64_t seq, std::vector<Ev> events, std::vector<v1::Stack> stacks = {}) {
  v1::AgentMessage m;
  m.set_seq(seq);
  for (auto& s : stacks) *m.mutable_batch()->add_new_stacks() = s;
  for (const Ev& e : events) {
    m.mutable_batch()->add_kinds(e.alloc ? v1::EVENT_KIND_ALLOC : v1::EVENT_KIND_FREE);
    m.mutable_batch()->add_addresses(e.addr);
    m.mutable_batch()->add_sizes(e.size);
    auto real = RealIds().find(e.stack);
    m.mutable_batch()->add_stack_ids(real == RealIds().end() ? e.stack : real->second);
  }
  return m;
}

v1::AgentMessage End(uint64_t seq, int code) {
  v1::AgentMessage m;
  m.set_seq(seq);
  m.mutable_end()->set_exited(true);
  m.mutable_end()->set_exit_code(code);
  return m;
}

class HeapStateTest : public ::testing::Test {
 protected:
  void Open(uint64_t min_log_bytes = 8 << 20, uint64_t snapshot_chunk_blocks = 1 << 20,
            double retention_seconds = 0) {
    state_.reset();
    store_.reset();
    auto s = Store::Open(dir_.path());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    HeapState::Options opts;
    opts.min_log_bytes = min_log_bytes;
    opts.snapshot_chunk_blocks = snapshot_chunk_blocks;
    opts.retention_seconds = retention_seconds;
    opts.leak_window_seconds = 60;
    state_ = std::make_unique<HeapState>(store_.get(), nullptr, opts);
    ASSERT_TRUE(state_->Load().ok());
  }
  int BatchesOnDisk(uint64_t pid) {
    int n = 0;
    EXPECT_TRUE(store_->ForEachBatch(pid, [&](uint64_t, v1::EventBatch&&) { ++n; }).ok());
    return n;
  }
  void SetUp() override { Open(); }

  uint64_t Apply(uint64_t pid, v1::AgentMessage m) {
    auto r = state_->Apply(pid, m);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ~uint64_t{0};
  }
  v1::LeaksResponse Leaks(bool all = false, const std::string& service = "") {
    v1::LeaksRequest req;
    req.set_all(all);
    req.set_service(service);
    auto r = LeaksReport(*state_, req);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<HeapState> state_;
};

TEST_F(HeapStateTest, ExitLeaksAreWhatIsLiveAtTheEnd) {
  EXPECT_EQ(Apply(0, Hello(1, "svc")), 0u);
  EXPECT_EQ(Apply(1, Batch(1, {{true, 0x10, 100, kUserStack}, {true, 0x20, 50, kUserStack},
                               {false, 0x10, 0, 0}, {true, 0x30, 24, kRuntimeStack},
                               {false, 0x999, 0, 0}},
                            {UserStack(), RuntimeStack()})),
            1u);
  auto procs = state_->ListProcesses({});
  ASSERT_EQ(procs.processes_size(), 1);
  EXPECT_EQ(procs.processes(0).state(), "running");
  EXPECT_EQ(procs.processes(0).live_bytes(), 74u);
  EXPECT_EQ(procs.processes(0).live_blocks(), 2u);
  EXPECT_EQ(Leaks().leaks_size(), 0) << "no exit leaks while running";

  EXPECT_EQ(Apply(1, End(2, 0)), 2u);
  v1::LeaksResponse r = Leaks();
  ASSERT_EQ(r.leaks_size(), 1);
  EXPECT_EQ(r.leaks(0).bytes(), 50u);
  EXPECT_EQ(r.leaks(0).blocks(), 1u);
  EXPECT_EQ(r.leaks(0).processes(), 1u);
  EXPECT_EQ(r.leaks(0).user_frame(), 1);
  EXPECT_EQ(r.hidden(), 1u);
  EXPECT_EQ(r.hidden_bytes(), 24u);
  EXPECT_EQ(Leaks(true).leaks_size(), 2);
  EXPECT_EQ(state_->ListProcesses({}).processes(0).state(), "exited");
}

// A program image replaced by exec (a wrapper script's `exec "$@"`) held
// its blocks until the exec freed them: they are no leak of the program run
// after it, and are counted, not listed, unless all is asked for.
TEST_F(HeapStateTest, WhatAnImageHeldWhenReplacedByExecIsCountedNotListed) {
  Apply(0, Hello(1, "svc"));
  Apply(1, Batch(1, {{true, 0x10, 100, kUserStack}, {true, 0x20, 50, kUserStack},
                     {true, 0x30, 24, kRuntimeStack}},
                  {UserStack(), RuntimeStack()}));
  v1::AgentMessage exec;
  exec.set_seq(2);
  exec.mutable_end()->set_exec(true);
  Apply(1, exec);
  Apply(0, Hello(2, "svc"));  // the image after the exec
  Apply(2, Batch(1, {{true, 0x40, 7, kUserStack}}));
  Apply(2, End(2, 0));
  v1::LeaksResponse r = Leaks();
  ASSERT_EQ(r.leaks_size(), 1);
  EXPECT_EQ(r.leaks(0).bytes(), 7u);
  EXPECT_EQ(r.leaks(0).processes(), 1u);
  EXPECT_EQ(r.processes(), 1u);
  EXPECT_EQ(r.exec_hidden(), 1u);
  EXPECT_EQ(r.exec_hidden_bytes(), 174u);
  EXPECT_EQ(r.exec_hidden_blocks(), 3u);
  EXPECT_EQ(r.hidden(), 0u) << "the runtime's block of the replaced image is not counted twice";
  v1::LeaksResponse all = Leaks(true);
  EXPECT_EQ(all.processes(), 2u);
  EXPECT_EQ(all.exec_hidden(), 0u);
  ASSERT_EQ(all.leaks_size(), 2);
  EXPECT_EQ(all.leaks(0).bytes(), 157u);  // 150 + 7, one stack in both
  EXPECT_EQ(all.leaks(0).processes(), 2u);
  auto procs = state_->ListProcesses({});
  ASSERT_EQ(procs.processes_size(), 2);
  EXPECT_EQ(procs.processes(0).state(), "exec");

  // A run's own processes, in a store that keeps others (cgoheap run --data).
  Apply(0, Hello(3, "svc"));
  Apply(3, Batch(1, {{true, 0x50, 9, kUserStack}}));
  Apply(3, End(2, 0));
  v1::LeaksRequest run;
  run.add_process_ids(HeapState::FormatProcessId(1));
  run.add_process_ids(HeapState::FormatProcessId(2));
  absl::StatusOr<v1::LeaksResponse> own = LeaksReport(*state_, run);
  ASSERT_TRUE(own.ok()) << own.status();
  ASSERT_EQ(own->leaks_size(), 1);
  EXPECT_EQ(own->leaks(0).bytes(), 7u) << "process 3's 9 bytes are another run's";
  EXPECT_EQ(own->exec_hidden(), 1u);
  EXPECT_EQ(LeaksReport(*state_, {})->leaks(0).bytes(), 16u) << "without ids: every process";
  run.add_process_ids(HeapState::FormatProcessId(4));
  EXPECT_TRUE(absl::IsNotFound(LeaksReport(*state_, run).status()));
  run.add_process_ids("not hex");
  EXPECT_TRUE(absl::IsInvalidArgument(LeaksReport(*state_, run).status()));
}

// What a forwarder's exit scan says is still pointed to is a client's claim:
// taken for stacks live at the end, never beyond what is live there, and
// kept across a restart. A stack reachable in every process is a leak
// still, sorted after the lost ones, and left out by lost_only.
TEST_F(HeapStateTest, ExitScanIsFoldedIntoTheExitLeaksWithinWhatIsLive) {
  v1::Stack other = UserStack();
  other.mutable_frames(1)->set_line(13);
  other = WithRealId(0x3333, other);
  Apply(0, Hello(1, "svc"));
  Apply(1, Batch(1, {{true, 0x10, 100, kUserStack}, {true, 0x20, 50, kUserStack},
                     {true, 0x30, 8, 0x3333}},
                  {UserStack(), other}));
  v1::AgentMessage end = End(2, 0);
  v1::ExitScan* scan = end.mutable_end()->mutable_exit_scan();
  scan->set_done(true);
  scan->set_skipped(std::string(511, 'x') + "\xc3\xa9" + std::string(100, 'y'));
  auto add = [&](uint64_t stack, uint64_t bytes, uint64_t blocks) {
    v1::StackTotal* t = scan->add_reachable();
    t->set_stack_id(stack);
    t->set_bytes(bytes);
    t->set_blocks(blocks);
  };
  add(RealIds()[kUserStack], 50, 1);
  add(RealIds()[0x3333], 1000, 7);        // more than is live: capped
  add(RealIds()[kUserStack], UINT64_MAX, 0);  // an overflow: capped, not wrapped
  add(0xdead, 10, 1);                     // no such stack here: ignored
  v1::StackTotal* indirect = scan->add_indirect();  // more than was lost: capped
  indirect->set_stack_id(RealIds()[kUserStack]);
  indirect->set_bytes(500);
  indirect->set_blocks(5);
  Apply(1, end);
  for (int restart = 0; restart < 2; ++restart) {
    if (restart) Open();
    v1::LeaksResponse r = Leaks();
    EXPECT_EQ(r.scanned(), 1u);
    ASSERT_EQ(r.leaks_size(), 2);
    EXPECT_EQ(r.leaks(0).bytes(), 150u);  // partly lost: first
    EXPECT_EQ(r.leaks(0).reachable_bytes(), 150u);
    EXPECT_EQ(r.leaks(0).reachable_blocks(), 1u);
    EXPECT_EQ(r.leaks(0).scanned_processes(), 1u);
    EXPECT_EQ(r.leaks(0).indirect_bytes(), 0u);  // 150 of 150 bytes reachable: none lost
    EXPECT_EQ(r.leaks(0).indirect_blocks(), 1u);  // 1 of 2 blocks
    EXPECT_EQ(r.leaks(1).bytes(), 8u);
    EXPECT_EQ(r.leaks(1).reachable_bytes(), 8u);
    EXPECT_EQ(r.leaks(1).reachable_blocks(), 1u);
  }
  v1::LeaksRequest req;
  req.set_lost_only(true);
  v1::LeaksResponse lost = *LeaksReport(*state_, req);
  ASSERT_EQ(lost.leaks_size(), 1);
  EXPECT_EQ(lost.leaks(0).bytes(), 150u);
  EXPECT_EQ(lost.reachable_hidden(), 1u);
  EXPECT_EQ(lost.reachable_hidden_bytes(), 8u);
  EXPECT_EQ(lost.reachable_hidden_blocks(), 1u);
  // Nothing of the claim is stored raw; the reason is cut at a character.
  v1::ListProcessesResponse ps = state_->ListProcesses({});
  EXPECT_EQ(ps.processes(0).end().exit_scan().reachable_size(), 0);
  EXPECT_EQ(ps.processes(0).end().exit_scan().indirect_size(), 0);
  EXPECT_EQ(ps.processes(0).end().exit_scan().skipped(), std::string(511, 'x'));

  // A process not scanned (skipped, with why) counts no block reachable.
  Apply(0, Hello(2, "svc"));
  Apply(2, Batch(1, {{true, 0x10, 100, kUserStack}}));
  v1::AgentMessage unscanned = End(2, 0);
  unscanned.mutable_end()->mutable_exit_scan()->set_skipped("ptrace is not allowed here");
  unscanned.mutable_end()->mutable_exit_scan()->add_reachable()->set_stack_id(RealIds()[kUserStack]);
  Apply(2, unscanned);
  v1::LeaksResponse both = Leaks();
  EXPECT_EQ(both.scanned(), 1u);
  EXPECT_EQ(both.not_scanned(), 1u);
  ASSERT_EQ(both.not_scanned_reasons_size(), 1);
  EXPECT_EQ(both.not_scanned_reasons(0), "ptrace is not allowed here");
  ASSERT_EQ(both.leaks_size(), 2);
  EXPECT_EQ(both.leaks(0).bytes(), 250u);
  EXPECT_EQ(both.leaks(0).scanned_processes(), 1u);
  EXPECT_EQ(both.leaks(0).reachable_bytes(), 150u);
}

TEST_F(HeapStateTest, ResendsAreIdempotentAndGapsAreRefused) {
  Apply(0, Hello(1, "svc"));
  v1::AgentMessage b1 = Batch(1, {{true, 0x10, 100, kUserStack}}, {UserStack()});
  EXPECT_EQ(Apply(1, b1), 1u);
  EXPECT_EQ(Apply(1, b1), 1u);  // resend
  EXPECT_EQ(Apply(0, Hello(1, "svc")), 1u) << "hello after reconnect tells the last seq";
  v1::AgentMessage gap = Batch(3, {{true, 0x20, 1, kUserStack}});
  auto r = state_->Apply(1, gap);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(state_->ListProcesses({}).processes(0).live_bytes(), 100u);
}

TEST_F(HeapStateTest, InvalidBatchesChangeNothing) {
  Apply(0, Hello(1, "svc"));
  v1::AgentMessage unknown_stack = Batch(1, {{true, 0x10, 100, 0x7777}});
  auto unknown = state_->Apply(1, unknown_stack);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  v1::AgentMessage ragged = Batch(1, {{true, 0x10, 100, kUserStack}}, {UserStack()});
  ragged.mutable_batch()->add_addresses(5);
  EXPECT_EQ(state_->Apply(1, ragged).status().code(), absl::StatusCode::kInvalidArgument);
  v1::AgentMessage zero_stack = Batch(1, {}, {v1::Stack()});
  EXPECT_EQ(state_->Apply(1, zero_stack).status().code(), absl::StatusCode::kInvalidArgument);
  v1::AgentMessage no_hello = Batch(1, {{false, 0x10, 0, 0}});
  EXPECT_EQ(state_->Apply(2, no_hello).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(state_->ListProcesses({}).processes(0).live_bytes(), 0u);
  EXPECT_EQ(state_->ListProcesses({}).processes(0).last_seq(), 0u);
}

TEST_F(HeapStateTest, RestartRebuildsRunningProcessesAndKeepsEndedOnes) {
  Apply(0, Hello(1, "a"));
  Apply(1, Batch(1, {{true, 0x10, 100, kUserStack}}, {UserStack()}));
  Apply(1, Batch(2, {{true, 0x20, 7, kUserStack}, {false, 0x10, 0, 0}}));
  Apply(0, Hello(2, "b"));
  Apply(2, Batch(1, {{true, 0x10, 33, kUserStack}}));
  Apply(2, End(2, 1));
  Open();  // a new process reading the same directory
  auto procs = state_->ListProcesses({});
  ASSERT_EQ(procs.processes_size(), 2);
  for (const auto& p : procs.processes()) {
    if (p.hello().service() == "a") {
      EXPECT_EQ(p.state(), "running");
      EXPECT_EQ(p.live_bytes(), 7u);
      EXPECT_EQ(p.last_seq(), 2u);
    } else {
      EXPECT_EQ(p.state(), "exited");
      EXPECT_EQ(p.end().exit_code(), 1);
    }
  }
  v1::LeaksResponse r = Leaks(false, "b");
  ASSERT_EQ(r.leaks_size(), 1);
  EXPECT_EQ(r.leaks(0).bytes(), 33u);
  EXPECT_EQ(r.leaks(0).stack().frames(1).function(), "main.main");
  // The running one continues where it was.
  EXPECT_EQ(Apply(0, Hello(1, "a")), 2u);
  EXPECT_EQ(Apply(1, End(3, 0)), 3u);
  EXPECT_EQ(Leaks(false, "a").leaks(0).bytes(), 7u);
}

// A process whose log has been compacted: 21 live blocks (10 B + 20 x 8 B).
uint64_t CompactedProcess(const std::function<uint64_t(uint64_t, v1::AgentMessage)>& apply) {
  apply(0, Hello(1, "long"));
  uint64_t seq = 0;
  apply(1, Batch(++seq, {{true, 0x10, 10, kUserStack}}, {UserStack()}));
  // Churn: each batch allocates 20 blocks and frees the previous 20.
  for (int round = 1; round <= 50; ++round) {
    std::vector<Ev> ev;
    for (uint64_t i = 0; i < 20; ++i) ev.push_back({true, 0x100000 * round + i * 16, 8, kUserStack});
    if (round > 1) {
      for (uint64_t i = 0; i < 20; ++i) ev.push_back({false, 0x100000 * (round - 1) + i * 16, 0, 0});
    }
    apply(1, Batch(++seq, ev));
  }
  return seq;
}

TEST_F(HeapStateTest, LongRunningProcessesAreCompactedIntoSnapshots) {
  // Compact as soon as the log outweighs the heap, in chunks of 4 blocks: the
  // 21 live blocks take 6 chunks, as a heap over 2 GiB takes many.
  Open(/*min_log_bytes=*/64, /*snapshot_chunk_blocks=*/4);
  uint64_t seq = CompactedProcess([this](uint64_t pid, v1::AgentMessage m) { return Apply(pid, m); });
  EXPECT_LT(BatchesOnDisk(1), 10) << "the log must have been compacted";
  auto before = state_->ListProcesses({}).processes(0);
  EXPECT_EQ(before.live_blocks(), 21u);
  EXPECT_EQ(before.live_bytes(), 10u + 20 * 8);
  uint64_t blocks_on_disk = 0;
  auto header = store_->GetSnapshot(
      1, [&](const v1::LiveSnapshot& c) { blocks_on_disk += c.addresses_size(); });
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->chunks(), 6u);
  EXPECT_EQ(header->addresses_size(), 0) << "blocks are in the chunks only";
  EXPECT_GE(blocks_on_disk, 20u);  // the snapshot may precede the last batch
  Open(64, 4);  // restart: snapshot + the batches after it
  auto after = state_->ListProcesses({}).processes(0);
  EXPECT_EQ(after.live_blocks(), 21u);
  EXPECT_EQ(after.live_bytes(), before.live_bytes());
  EXPECT_EQ(after.last_seq(), seq);
  EXPECT_EQ(after.events(), before.events());
  Apply(1, End(++seq, 0));
  v1::LeaksResponse r = Leaks(false, "long");
  ASSERT_EQ(r.leaks_size(), 1);
  EXPECT_EQ(r.leaks(0).blocks(), 21u);
  EXPECT_EQ(BatchesOnDisk(1), 0);
  int chunks_left = 0;
  EXPECT_FALSE(store_->GetSnapshot(1, [&](const v1::LiveSnapshot&) { ++chunks_left; }).ok())
      << "ending a process removes its snapshot";
  EXPECT_EQ(chunks_left, 0);
}

// Opens the store's RocksDB directly, as a disk fault or an older cgoheapd
// would leave it, and runs `edit` on its snapshots column family.
void EditSnapshots(const std::string& dir,
                   const std::function<void(rocksdb::DB*, rocksdb::ColumnFamilyHandle*)>& edit) {
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies({}, dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const std::string& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open({}, dir, cfs, &handles, &db).ok());
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "snapshots") edit(db, handles[i]);
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  delete db;
}

v1::Stack NamedStack(uint64_t id, const char* fn, int line);  // below

int StacksOnDisk(Store* store) {
  int n = 0;
  EXPECT_TRUE(store->ForEachStack([&](v1::Stack&&) { ++n; }).ok());
  return n;
}

TEST_F(HeapStateTest, RetentionForgetsEndedProcessesAndStacksNothingElseUses) {
  Open(8 << 20, 1 << 20, /*retention_seconds=*/60);
  // a: ended, its leak on stack "a". b: running, a live block on "b".
  // c: running, defined "c" and freed its block (it may use "c" again).
  Apply(0, Hello(1, "a"));
  Apply(1, Batch(1, {{true, 0x10, 8, 0xa}}, {NamedStack(0xa, "main.a", 1)}));
  Apply(1, End(2, 0));
  Apply(0, Hello(2, "b"));
  Apply(2, Batch(1, {{true, 0x20, 8, 0xb}}, {NamedStack(0xb, "main.b", 2)}));
  Apply(0, Hello(3, "c"));
  Apply(3, Batch(1, {{true, 0x30, 8, 0xc}, {false, 0x30, 0, 0}}, {NamedStack(0xc, "main.c", 3)}));
  ASSERT_EQ(StacksOnDisk(store_.get()), 3);
  const int64_t now = absl::ToUnixNanos(absl::Now());
  auto forgotten = state_->Expire(now);  // a ended just now: kept
  ASSERT_TRUE(forgotten.ok());
  EXPECT_EQ(*forgotten, 0u);
  forgotten = state_->Expire(now + int64_t{61} * 1'000'000'000);
  ASSERT_TRUE(forgotten.ok()) << forgotten.status();
  EXPECT_EQ(*forgotten, 1u);
  EXPECT_EQ(state_->ListProcesses({}).processes_size(), 2);
  EXPECT_EQ(Leaks(false, "a").leaks_size(), 0);
  EXPECT_EQ(StacksOnDisk(store_.get()), 2) << "a's stack goes; b's and c's stay";
  // c uses its stack again without defining it: still known.
  Apply(3, Batch(2, {{true, 0x40, 8, 0xc}}));
  EXPECT_EQ(state_->ListProcesses({}).processes(1).live_blocks(), 1u);
  // After a restart, the same.
  Open(8 << 20, 1 << 20, 60);
  EXPECT_EQ(state_->ListProcesses({}).processes_size(), 2);
  EXPECT_EQ(StacksOnDisk(store_.get()), 2);
}

TEST_F(HeapStateTest, AfterARestartNoStackIsForgottenWhileAProcessFromBeforeRuns) {
  Open(8 << 20, 1 << 20, 60);
  Apply(0, Hello(1, "old"));
  Apply(1, Batch(1, {{true, 0x10, 8, 0xa}, {false, 0x10, 0, 0}}, {NamedStack(0xa, "main.a", 1)}));
  Apply(0, Hello(2, "gone"));
  Apply(2, Batch(1, {{true, 0x20, 8, 0xb}}, {NamedStack(0xb, "main.b", 2)}));
  Apply(2, End(2, 0));
  Open(8 << 20, 1 << 20, 60);  // which stacks process 1 defined is not stored
  auto forgotten = state_->Expire(absl::ToUnixNanos(absl::Now()) + int64_t{61} * 1'000'000'000);
  ASSERT_TRUE(forgotten.ok());
  EXPECT_EQ(*forgotten, 1u);
  EXPECT_EQ(StacksOnDisk(store_.get()), 2) << "process 1 may still use either";
  Apply(1, Batch(2, {{true, 0x30, 8, 0xa}}));  // and it does
  EXPECT_EQ(state_->ListProcesses({}).processes(0).live_blocks(), 1u);
}

TEST_F(HeapStateTest, SilentProcessesAreLostUntilHeardFromAgain) {
  state_.reset();
  int64_t now = 1'000'000'000'000;
  HeapState::Options opts;
  opts.lost_after_seconds = 60;
  opts.clock = [&now] { return now; };
  HeapState state(store_.get(), nullptr, opts);
  ASSERT_TRUE(state.Load().ok());
  auto apply = [&](uint64_t pid, v1::AgentMessage m) {
    auto r = state.Apply(pid, m);
    EXPECT_TRUE(r.ok()) << r.status();
  };
  apply(0, Hello(1, "quiet"));
  apply(1, Batch(1, {{true, 0x10, 100, kUserStack}}, {UserStack()}));
  apply(0, Hello(2, "done"));
  apply(2, End(1, 0));
  auto state_of = [&](int i) { return state.ListProcesses({}).processes(i).state(); };
  EXPECT_EQ(state_of(0), "running");
  EXPECT_EQ(TopReport(state, {})->total_bytes(), 100u);
  now += int64_t{61} * 1'000'000'000;
  EXPECT_EQ(state_of(0), "lost");
  EXPECT_EQ(state_of(1), "exited") << "ended processes are never lost";
  EXPECT_EQ(TopReport(state, {})->total_bytes(), 0u) << "a lost process's heap is not live";
  EXPECT_EQ(TopReport(state, {})->processes(), 0u);
  v1::AgentMessage heartbeat = Batch(2, {});  // an empty batch
  heartbeat.mutable_batch();
  apply(1, heartbeat);
  EXPECT_EQ(state_of(0), "running");
  EXPECT_EQ(TopReport(state, {})->total_bytes(), 100u);
}

TEST_F(HeapStateTest, LeaksPastTheLimitAreCountedNotReturned) {
  Apply(0, Hello(1, "many"));
  std::vector<Ev> ev;
  std::vector<v1::Stack> stacks;
  for (int i = 1; i <= 5; ++i) {
    stacks.push_back(NamedStack(0x100 + i, "main.site", i));
    ev.push_back({true, 0x1000 + 16 * static_cast<uint64_t>(i), 100 * static_cast<uint64_t>(i),
                  0x100 + static_cast<uint64_t>(i)});
  }
  Apply(1, Batch(1, ev, stacks));
  Apply(1, End(2, 0));
  v1::LeaksRequest req;
  req.set_limit(2);
  auto r = LeaksReport(*state_, req);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->leaks_size(), 2);
  EXPECT_EQ(r->leaks(0).bytes(), 500u);  // the largest
  EXPECT_EQ(r->leaks(1).bytes(), 400u);
  EXPECT_EQ(r->omitted(), 3u);
  EXPECT_EQ(r->omitted_bytes(), 300u + 200 + 100);
  EXPECT_EQ(LeaksReport(*state_, {})->leaks_size(), 5) << "the default limit is 1000";
}

TEST(EstimateTest, SumsAreExactInAnyOrder) {
  // In doubles, (2^60 + 3) - 2^60 is 0 and the sum of these terms depends on
  // their order; in fixed point neither happens.
  const double w = SampleWeight(100, 4096);
  std::vector<Estimate> terms = {Estimate::Term(uint64_t{1} << 60, 1.0), Estimate::Term(3, 1.0),
                                 Estimate::Term(100, w), Estimate::Term(7, SampleWeight(7, 4096))};
  Estimate forward, backward;
  for (const Estimate& t : terms) forward += t;
  for (auto it = terms.rbegin(); it != terms.rend(); ++it) backward += *it;
  EXPECT_EQ(forward, backward);
  forward -= terms[0];
  forward -= terms[2];
  forward -= terms[3];
  EXPECT_EQ(forward.Rounded(), 3u);
  EXPECT_EQ(Estimate::Term(uint64_t{1} << 60, 1.0).Rounded(), uint64_t{1} << 60);
  EXPECT_EQ(Estimate::Term(UINT64_MAX, 1.0).Rounded(), UINT64_MAX);
  EXPECT_EQ(Estimate::Of(-1).Rounded(), 0u);
  EXPECT_EQ(Estimate::Of(std::nan("")).Rounded(), 0u);
}

TEST_F(HeapStateTest, FiguresAreTheSameAfterARestartWhateverTheSizes) {
  // Found by fuzz/heap_state_fuzz.cc: live bytes summed in doubles changed
  // across a restart (the snapshot gives the blocks back in another order).
  Open(64, 3);
  for (uint64_t pid : {uint64_t{1}, uint64_t{2}}) {
    v1::AgentMessage h = Hello(pid, "sizes");
    h.mutable_hello()->set_sample_bytes(pid == 1 ? 0 : 4096);  // exact, then sampled
    Apply(0, h);
    std::vector<Ev> ev;
    for (uint64_t i = 0; i < 40; ++i) {
      ev.push_back({true, 0x1000 + 16 * i, i % 3 == 0 ? (uint64_t{1} << 58) + i : 17 * i + 1, kUserStack});
    }
    Apply(pid, Batch(1, ev, {UserStack()}));
    std::vector<Ev> frees;
    for (uint64_t i = 0; i < 40; i += 2) frees.push_back({false, 0x1000 + 16 * i, 0, 0});
    Apply(pid, Batch(2, frees));
  }
  auto before = state_->ListProcesses({});
  auto top_before = TopReport(*state_, {});
  ASSERT_TRUE(top_before.ok());
  Open(64, 3);
  auto after = state_->ListProcesses({});
  ASSERT_EQ(after.processes_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(after.processes(i).live_bytes(), before.processes(i).live_bytes());
    EXPECT_EQ(after.processes(i).live_blocks(), before.processes(i).live_blocks());
  }
  uint64_t exact = 0;
  for (uint64_t i = 1; i < 40; i += 2) exact += i % 3 == 0 ? (uint64_t{1} << 58) + i : 17 * i + 1;
  EXPECT_EQ(after.processes(0).live_bytes(), exact) << "exact mode is exact at any size";
  EXPECT_EQ(after.processes(0).live_blocks(), 20u);
  auto top_after = TopReport(*state_, {});
  ASSERT_TRUE(top_after.ok());
  EXPECT_EQ(top_after->SerializeAsString(), top_before->SerializeAsString());
}

TEST_F(HeapStateTest, SnapshotMissingAChunkIsDataLossNotASmallerHeap) {
  Open(64, 4);
  CompactedProcess([this](uint64_t pid, v1::AgentMessage m) { return Apply(pid, m); });
  state_.reset();
  store_.reset();
  for (uint64_t lost : {uint64_t{5}, uint64_t{1}}) {  // the last chunk, then one in the middle
    EditSnapshots(dir_.path(), [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
      ASSERT_TRUE(db->Delete({}, cf, BatchKey(1, lost)).ok());
    });
    auto s = Store::Open(dir_.path());
    ASSERT_TRUE(s.ok());
    HeapState reloaded(s->get(), nullptr);
    absl::Status st = reloaded.Load();
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_NE(st.message().find(lost == 5 ? "has 5 of its 6 chunks" : "chunk 1 is unreadable"),
              std::string::npos)
        << st;
  }
}

TEST_F(HeapStateTest, SnapshotsWrittenBeforeChunksStillLoad) {
  Open(64, 4);
  uint64_t seq = CompactedProcess([this](uint64_t pid, v1::AgentMessage m) { return Apply(pid, m); });
  auto before = state_->ListProcesses({}).processes(0);
  // The old layout: one LiveSnapshot holding every block, no chunk keys.
  v1::LiveSnapshot old_style;
  auto header = store_->GetSnapshot(1, [&](const v1::LiveSnapshot& c) {
    for (int i = 0; i < c.addresses_size(); ++i) {
      old_style.add_addresses(c.addresses(i));
      old_style.add_sizes(c.sizes(i));
      old_style.add_stack_ids(c.stack_ids(i));
    }
  });
  ASSERT_TRUE(header.ok());
  v1::LiveSnapshot blocks = old_style;
  old_style = *header;
  old_style.set_chunks(0);
  old_style.mutable_addresses()->CopyFrom(blocks.addresses());
  old_style.mutable_sizes()->CopyFrom(blocks.sizes());
  old_style.mutable_stack_ids()->CopyFrom(blocks.stack_ids());
  state_.reset();
  store_.reset();
  EditSnapshots(dir_.path(), [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
    for (uint64_t c = 0; c < header->chunks(); ++c) ASSERT_TRUE(db->Delete({}, cf, BatchKey(1, c)).ok());
    ASSERT_TRUE(db->Put({}, cf, ProcessKey(1), old_style.SerializeAsString()).ok());
  });
  Open(64, 4);
  auto after = state_->ListProcesses({}).processes(0);
  EXPECT_EQ(after.live_blocks(), before.live_blocks());
  EXPECT_EQ(after.live_bytes(), before.live_bytes());
  EXPECT_EQ(after.last_seq(), seq);
}

v1::Stack NamedStack(uint64_t id, const char* fn, int line) {
  v1::Stack s;
  s.add_frames()->set_function("malloc");
  v1::Frame* f = s.add_frames();
  f->set_function(fn);
  f->set_file("/src/svc/main.go");
  f->set_line(line);
  f->set_go(true);
  return WithRealId(id, std::move(s));
}

// A service that never exits, over three minutes of simulated time (window
// 60 s): a churning stack, a cache that fills in the first 20 s and stays, a
// start-up allocation, and one request in 50 forgetting a free.
TEST_F(HeapStateTest, GrowthLeaksAreFoundWhileTheProcessRunsAndNothingElseIs) {
  constexpr uint64_t kChurn = 0x10, kCache = 0x20, kStartup = 0x30, kLeak = 0x40;
  for (uint64_t p = 1; p <= 2; ++p) {
    Apply(0, Hello(p, "api"));
    Apply(p, Batch(1, {{true, 0x1, 4096, kStartup}},
                   {NamedStack(kChurn, "main.handle", 10), NamedStack(kCache, "main.cache", 20),
                    NamedStack(kStartup, "main.init", 30), NamedStack(kLeak, "main.forgets", 40)}));
  }
  const int64_t t0 = 1'700'000'000'000'000'000;
  uint64_t seq[3] = {0, 1, 1};
  uint64_t next_addr = 0x100000;
  std::vector<uint64_t> churn_live[3];
  uint32_t rng = 12345;
  for (int sec = 1; sec <= 180; ++sec) {
    for (uint64_t p = 1; p <= 2; ++p) {
      std::vector<Ev> ev;
      for (int req = 0; req < 100; ++req) {  // 100 requests a second
        rng = rng * 1103515245 + 12345;
        // Churn: allocate; free a random earlier block so the level wanders.
        uint64_t a = next_addr += 16;
        ev.push_back({true, a, 256 + (rng >> 20) % 512, kChurn});
        churn_live[p].push_back(a);
        if (churn_live[p].size() > 20 + (rng >> 16) % 40) {
          size_t i = (rng >> 8) % churn_live[p].size();
          ev.push_back({false, churn_live[p][i], 0, 0});
          churn_live[p].erase(churn_live[p].begin() + i);
        }
        if (req % 50 == 0) ev.push_back({true, next_addr += 16, 64, kLeak});
      }
      if (sec <= 20) ev.push_back({true, next_addr += 16, 10000, kCache});
      Apply(p, Batch(++seq[p], ev));
    }
    state_->DetectGrowth(t0 + sec * 1'000'000'000LL);
  }
  v1::LeaksResponse r = Leaks(false, "api");
  ASSERT_EQ(r.leaks_size(), 1) << r.DebugString();
  const v1::Leak& leak = r.leaks(0);
  EXPECT_EQ(leak.kind(), "growth");
  EXPECT_EQ(leak.stack().frames(1).function(), "main.forgets");
  EXPECT_EQ(leak.processes(), 2u);
  EXPECT_EQ(leak.blocks(), 2u * 180 * 2);  // 2 a second for 180 s, in each of 2 processes
  EXPECT_EQ(leak.bytes(), leak.blocks() * 64);
  // 2 processes x 2 leaks a second x 64 bytes x 3600 = 921,600 bytes/hour.
  EXPECT_NEAR(leak.rate_bytes_per_hour(), 921600, 921600 * 0.1);
  EXPECT_GT(leak.since_unix_nanos(), t0);
  EXPECT_LE(leak.since_unix_nanos(), t0 + 180 * 1'000'000'000LL - 60 * 1'000'000'000LL);
  auto suspects = Suspects(*state_, 10);
  EXPECT_EQ(suspects["api"].stacks, 1u);
  EXPECT_EQ(suspects["api"].bytes, 2.0 * 180 * 2 * 64);
  ASSERT_EQ(suspects["api"].top.size(), 1u);
  EXPECT_EQ(suspects["api"].top[0].site, "main.forgets /src/svc/main.go:40");
  EXPECT_EQ(suspects["api"].top[0].id, absl::StrFormat("%016x", RealIds()[kLeak]));

  // When a process ends, its growth becomes an exit leak.
  Apply(1, End(++seq[1], 0));
  r = Leaks(false, "api");
  ASSERT_EQ(r.leaks_size(), 5) << r.DebugString();  // 1 growth (process 2) + 4 exit stacks
  EXPECT_EQ(r.leaks(0).kind(), "growth");
  EXPECT_EQ(r.leaks(0).processes(), 1u);
}

TEST_F(HeapStateTest, SameStackInManyProcessesIsOneLeak) {
  for (uint64_t id = 1; id <= 3; ++id) {
    Apply(0, Hello(id, "fleet"));
    Apply(id, Batch(1, {{true, 0x10 * id, 10 * id, kUserStack}}, {UserStack()}));
    Apply(id, End(2, 0));
  }
  v1::LeaksResponse r = Leaks(false, "fleet");
  EXPECT_EQ(r.processes(), 3u);
  ASSERT_EQ(r.leaks_size(), 1);
  EXPECT_EQ(r.leaks(0).processes(), 3u);
  EXPECT_EQ(r.leaks(0).bytes(), 60u);
  EXPECT_EQ(r.leaks(0).blocks(), 3u);
  EXPECT_EQ(r.leaks(0).process_ids_size(), 3);
}

TEST_F(HeapStateTest, ConcurrentStreamsOfDifferentProcesses) {
  constexpr int kProcs = 8, kBatches = 50;
  // Made before the threads: it records its id in the test's id map, which
  // Batch() then only reads (the threads writing it at once was this
  // test's own race: a rare crash in the map, not in HeapState).
  const v1::Stack user = UserStack();
  std::vector<std::thread> threads;
  for (int p = 1; p <= kProcs; ++p) {
    threads.emplace_back([this, p, &user] {
      Apply(0, Hello(p, "many"));
      for (int b = 1; b <= kBatches; ++b) {
        std::vector<Ev> ev = {{true, uint64_t(b) * 16, 8, kUserStack}};
        if (b % 2 == 0) ev.push_back({false, uint64_t(b - 1) * 16, 0, 0});
        Apply(p, Batch(b, ev, b == 1 ? std::vector<v1::Stack>{user} : std::vector<v1::Stack>{}));
      }
      Apply(p, End(kBatches + 1, 0));
    });
  }
  for (auto& t : threads) t.join();
  v1::LeaksResponse r = Leaks(false, "many");
  ASSERT_EQ(r.leaks_size(), 1);
  EXPECT_EQ(r.leaks(0).blocks(), uint64_t(kProcs * kBatches / 2));
  EXPECT_EQ(r.leaks(0).processes(), uint64_t(kProcs));
}

}  // namespace
}  // namespace cgoheap::server
