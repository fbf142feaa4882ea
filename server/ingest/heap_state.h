// What cgoheapd knows about every process: the live heap of running processes
// (derived from their acknowledged batches) and the exit leaks of ended ones.
//
// Every mutation is written to the Store before it is applied in memory and
// acknowledged, so the state after a restart (Load) is the state that was
// acknowledged. Messages are numbered per process: a seq at or below the last
// applied one is a resend and is acknowledged without being applied again.
//
//   HeapState state(store.get(), metrics.get());
//   CHECK_OK(state.Load());
//   absl::StatusOr<uint64_t> acked = state.Apply(msg);   // hello, batch or end
//   state.ForEachProcess({.service = "api"}, [&](const HeapState::ProcessView& p) { ... });
//
// Reports (leaks grouped across processes, top, the metrics' suspects, pprof
// profiles) are server/query/'s: they read the state through ForEachProcess
// and FindStack, and nothing here knows them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cgoheap.pb.h"
#include "server/ingest/estimate.h"
#include "server/leak/classify.h"
#include "common/limits.h"
#include "server/metrics/metrics.h"
#include "server/leak/growth.h"
#include "server/leak/leak_sink.h"
#include "server/storage/store.h"

namespace cgoheap::server {

using cgoheap::kMaxFramesPerStack;  // common/limits.h

// Thread-safe.
class HeapState {
 public:
  // Live bytes and blocks: as recorded, and what the samples stand for.
  struct Totals {
    uint64_t bytes = 0;  // as recorded
    uint64_t blocks = 0;
    Estimate est_bytes;  // weighted by 1/p (equal to the above in exact mode)
    Estimate est_blocks;
    void Add(uint64_t size, double w) {
      bytes += size;
      blocks += 1;
      est_bytes += Estimate::Term(size, w);
      est_blocks += Estimate::Term(1, w);
    }
    void Remove(uint64_t size, double w) {
      bytes -= size;
      blocks -= 1;
      est_bytes -= Estimate::Term(size, w);
      est_blocks -= Estimate::Term(1, w);
    }
  };
  // A stack flagged as a growth leak in one process.
  struct Growth {
    double rate_per_hour;
    int64_t since;  // Unix nanoseconds
  };
  struct StackEntry {
    v1::Stack stack;
    StackClass cls;
  };
  // What a query sees of one process: valid only during the callback of
  // ForEachProcess, which holds the process's lock.
  struct ProcessView {
    uint64_t id;
    const v1::StoredProcess& rec;  // hello, end, exit leaks, counters
    // Running, but not heard from for longer than lost_after_seconds: its
    // heap is not current.
    bool lost;
    // Running processes: the live heap, by stack and in all. Empty once ended
    // (what was live at the end is rec.exit_leaks).
    const absl::flat_hash_map<uint64_t, Totals>& live_by_stack;
    const Totals& live;
    // Stacks flagged as growing, and the samples of live bytes by stack that
    // growth detection keeps (a window and a bit, oldest first).
    const absl::flat_hash_map<uint64_t, Growth>& growing;
    const absl::flat_hash_map<uint64_t, std::vector<GrowthSample>>& history;
    // When the first of those samples was taken (0: none yet); every stack
    // live then has a sample from that time on.
    int64_t history_since;
  };
  struct ProcessFilter {
    std::string service;      // "": every service
    uint64_t process_id = 0;  // 0: every process
    std::vector<uint64_t> process_ids = {};  // and these too (with process_id 0: only these)
  };

  struct Options {
    // The batch log of a running process is compacted into a snapshot once it
    // exceeds this and four times the live heap.
    uint64_t min_log_bytes = 8 << 20;
    // Growth leaks: a stack is flagged when its live memory rises through a
    // whole window of this length.
    double leak_window_seconds = 600;
    // Live blocks per stored snapshot chunk: at most ~30 bytes each, so a
    // chunk stays far below protobuf's 2 GiB limit whatever the heap's size.
    uint64_t snapshot_chunk_blocks = 1 << 20;
    // Bounds on what clients can make the server hold (RESOURCE_EXHAUSTED
    // beyond, counted in cgoheap_limit_refusals_total{limit}). A live block
    // costs about 50 bytes of memory, a stack a few hundred.
    uint64_t max_processes = 100'000;           // stored, running or ended
    uint64_t max_stacks = 1'000'000;            // distinct stacks, all processes
    uint64_t max_live_blocks = 50'000'000;      // all running processes together
    uint64_t max_process_live_blocks = 10'000'000;
    uint64_t max_process_stacks = 200'000;      // stacks one process may define
    // Ended processes are forgotten this long after their end (with the
    // stacks nothing else uses); 0: kept forever.
    double retention_seconds = 30 * 24 * 3600;
    // A running process not heard from (no message on its stream: forwarders
    // send an empty batch every 10 s when there is nothing else) for this
    // long is "lost": its forwarder is gone. Its heap stops counting as live
    // until it is heard from again. 0: never.
    double lost_after_seconds = 300;
    // The time, in Unix nanoseconds (tests set their own); null: the clock.
    std::function<int64_t()> clock;
  };
  HeapState(Store* store, ServerMetrics* metrics) : HeapState(store, metrics, Options()) {}
  HeapState(Store* store, ServerMetrics* metrics, Options options)
      : store_(store), metrics_(metrics), options_(options) {}

  // Samples the live heap of every running process by stack and re-evaluates
  // growth leaks. Called periodically (the server: every window/16 at most).
  void DetectGrowth(int64_t now_unix_nanos);

  // Forgets ended processes older than the retention, and the stacks no
  // remaining process uses, in memory and in the store; compacts the store
  // when it forgot anything. Returns how many processes it forgot.
  absl::StatusOr<size_t> Expire(int64_t now_unix_nanos);

  // Rebuilds memory from the store. Call once, before serving.
  absl::Status Load();

  // Applies one message of a process's stream. hello: process_id comes from
  // the message. Returns the seq acknowledged (durable) after it.
  absl::StatusOr<uint64_t> Apply(uint64_t stream_process_id, v1::AgentMessage& msg);
  // Where a forwarder resumes reading the process's ring: the lane positions
  // of its last durable batch (empty if none).
  std::vector<uint64_t> LanePositions(uint64_t process_id) const;

  v1::ListProcessesResponse ListProcesses(const v1::ListProcessesRequest& req) const;
  // New findings (a stack starting to grow, exit leaks) go to this sink.
  void SetLeakSink(LeakSink* sink) { sink_ = sink; }

  // Calls fn for every process that has a hello and matches the filter, one
  // at a time, in no particular order, with the process's lock held: fn may
  // call FindStack and Now, nothing else of this state. NotFound when the
  // filter names a process id this server does not have.
  absl::Status ForEachProcess(const ProcessFilter& filter,
                              const std::function<void(const ProcessView&)>& fn) const;
  // A stack any process defined, with its classification; null if unknown.
  std::shared_ptr<const StackEntry> FindStack(uint64_t id) const;
  // Unix nanoseconds (Options::clock when set).
  int64_t Now() const;
  const Options& options() const { return options_; }

  static std::string FormatProcessId(uint64_t id);
  static bool ParseProcessId(std::string_view text, uint64_t* id);

 private:
  struct Block {
    uint64_t stack_id;
    uint64_t size;
  };
  struct Process {
    mutable absl::Mutex mu;
    v1::StoredProcess rec ABSL_GUARDED_BY(mu);
    uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;
    absl::flat_hash_map<uint64_t, Block> live ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<uint64_t, Totals> by_stack ABSL_GUARDED_BY(mu);
    Totals total ABSL_GUARDED_BY(mu);
    uint64_t log_bytes ABSL_GUARDED_BY(mu) = 0;  // batch bytes since the last snapshot
    // EventBatch.lane_positions of the last batch applied that had them.
    std::vector<uint64_t> lane_positions ABSL_GUARDED_BY(mu);
    uint64_t stacks_defined ABSL_GUARDED_BY(mu) = 0;  // new stacks its batches brought
    // Running: the stacks its stream defined (it may use them again without
    // defining them), so retention keeps them. Unknown for processes loaded
    // at start-up (stored batches do not say): then no stack is forgotten
    // until they end.
    absl::flat_hash_set<uint64_t> defined ABSL_GUARDED_BY(mu);
    bool defined_unknown ABSL_GUARDED_BY(mu) = false;
    int64_t last_heard ABSL_GUARDED_BY(mu) = 0;  // Unix nanoseconds
    // Growth detection: live bytes (estimated) by stack over time, in memory
    // only (after a restart the history starts again).
    absl::flat_hash_map<uint64_t, std::vector<GrowthSample>> history ABSL_GUARDED_BY(mu);
    int64_t last_sample ABSL_GUARDED_BY(mu) = 0;
    int64_t first_sample ABSL_GUARDED_BY(mu) = 0;
    absl::flat_hash_map<uint64_t, Growth> growing ABSL_GUARDED_BY(mu);
  };
  // Publishes one process's finding to watchers (internal stacks are not).
  void Announce(uint64_t process_id, const Process& p, const char* kind, uint64_t stack_id,
                double bytes, double blocks, double rate, int64_t since) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);

  absl::StatusOr<uint64_t> Hello(const v1::ProcessHello& hello);
  absl::Status ValidateBatch(uint64_t seq, const v1::EventBatch& b) const;
  static void ApplyEvents(Process& p, const v1::EventBatch& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  static void AddBlock(Process& p, uint64_t addr, uint64_t size, uint64_t stack)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  static void RemoveFromTotals(Process& p, const Block& blk) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  void DetectGrowth(uint64_t id, Process& p, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  bool IsInternal(uint64_t stack_id) const;
  // Replaces the batch log with a snapshot of the live heap once the log
  // outweighs it; keeps a running process's disk use proportional to its heap.
  absl::Status MaybeSnapshot(uint64_t id, Process& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  uint64_t SnapshotThreshold(const Process& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);
  void AddStack(v1::Stack&& st);
  bool HaveStack(uint64_t id) const;
  std::shared_ptr<Process> Find(uint64_t id) const;
  v1::ProcessInfo Info(uint64_t id, const Process& p) const;

  Store* const store_;
  ServerMetrics* const metrics_;
  const Options options_;
  LeakSink* sink_ = nullptr;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Process>> procs_ ABSL_GUARDED_BY(mu_);
  // Live blocks of every process together (Options::max_live_blocks).
  std::atomic<int64_t> live_blocks_{0};
  // Held shared while a batch checks for and adds stacks, exclusively while
  // Expire forgets stacks: a stack is never forgotten between a batch
  // finding it known and counting it as defined.
  mutable absl::Mutex stack_use_mu_;
  // RESOURCE_EXHAUSTED for `limit`, counted; what says what to do.
  absl::Status Refuse(const char* limit, const std::string& what) const;
  // Running, but not heard from for longer than lost_after_seconds.
  bool Lost(const Process& p, int64_t now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu);

  mutable absl::Mutex stacks_mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<const StackEntry>> stacks_
      ABSL_GUARDED_BY(stacks_mu_);
};

}  // namespace cgoheap::server
