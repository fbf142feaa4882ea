// The forwarder: drains the rings that agents create in one directory,
// symbolizes their stacks, and streams each process to cgoheapd.
//
// It runs beside the target (in `cgoheap run`, in the launcher itself), so it
// can read the target's files and /proc entries, and it outlives the target:
// it reports the end of each process, which the target cannot do for itself
// (docs/ARCHITECTURE.md fact 1).
//
//   Forwarder fwd(options);
//   while (running) { fwd.Poll(); ...waitpid... fwd.OnExit(pid, status); }
//   absl::Status st = fwd.Finish(absl::Seconds(30));
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cgoheap.pb.h"
#include "client/exit_scan.h"
#include "client/ingest_stream.h"
#include "client/ring_dir.h"
#include "client/ring_reader.h"
#include "common/limits.h"
#include "symbolize/symbolizer.h"

namespace cgoheap::client {

struct ForwarderOptions {
  std::string ring_dir;
  std::string service;  // empty: CGOHEAP_SERVICE, else the executable's name
  // The server (required).
  std::shared_ptr<grpc::Channel> channel;
  // "authorization" metadata of every stream (a bearer ingest token), or "".
  std::string authorization;
  // Ring space goes back to the agent only once the server has made its
  // events durable, so that a forwarder restarted after a crash resumes
  // every process exactly (cgoheap forward). Off (cgoheap run, whose
  // forwarder is the launcher: it has no successor), space goes back as soon
  // as it is read, which spares a busy program the wait for the ack.
  bool resumable = false;
  // Remember every process id for process_ids() (cgoheap run); a forwarder
  // that runs for ever (cgoheap forward) keeps nothing of an ended process.
  bool remember_processes = true;
  size_t max_batch_events = 8192;
  // A batch is sent before its events and new stacks pass this many bytes.
  size_t max_batch_bytes = kBatchBytes;
  absl::Duration max_batch_delay = absl::Milliseconds(500);
  // A process with nothing to send still sends an empty batch this often, so
  // that cgoheapd can tell a quiet process from one whose forwarder is gone
  // (cgoheapd --lost-after).
  absl::Duration heartbeat = absl::Seconds(10);
  // Asked once for each process found in exact mode that WatchExit did not
  // name, before any of its events is read, with its hello: "" to watch it
  // for a scan at its exit as WatchExit does (cgoheap run --trace-children
  // has just traced it), else why it is not (said at its end, where the
  // report counts what was not scanned). Unset: only WatchExit's.
  std::function<std::string(pid_t pid, const v1::ProcessHello& hello)> watch_exit_of;
};


// A stack longer than the server takes (kMaxFramesPerStack, counting inlined
// calls) keeps its innermost and outermost frames, where the allocation and
// the program's entry are, with one frame in between that says how many were
// left out.
void CapStack(v1::Stack* stack);

// How long to sleep between polls: long enough that an idle or sampled
// process costs the machine next to nothing (every poll wakes the launcher
// and may send a batch), short enough that no lane fills up between two polls
// at the rate records arrived during the last one.
// The pace is in lane space, not records: a record of a deep stack (a C++
// library under an HTTP handler: 40 words and more) fills a lane five times
// as fast as one of a shallow stack, and writers wait when their lane is
// full.
class PollPacer {
 public:
  static constexpr int kMaxSleepMs = 50;

  // quarters: how much the poll that just ended read, in quarters of a lane
  // (Forwarder::Poll). Returns the milliseconds to sleep before the next
  // one: about the time a quarter of a lane took to fill.
  int Next(double quarters) { return Next(quarters, absl::Now()); }
  int Next(double quarters, absl::Time now);  // for tests

 private:
  absl::Time last_ = absl::InfinitePast();
  int sleep_ms_ = 1;
};

// Not thread-safe: one thread polls.
class Forwarder {
 public:
  explicit Forwarder(ForwarderOptions options);
  ~Forwarder();

  // Discovers new rings, drains every ring, sends batches that are due, and
  // ends processes known to have exited. Returns the lane space it read, in
  // quarters of a lane (each ring's own), summed over the rings (PollPacer).
  double Poll();
  // Reads the debug information of the program's executable ahead of its
  // first stack, and readies the stack ids' hash. Thread-safe with everything else here (cgoheap run calls it
  // on a thread of its own while the program starts).
  void Prepare(const std::string& executable);
  // The process pid ended with this waitpid status.
  void OnExit(pid_t pid, int wait_status);
  // Keep the live blocks of pid's rings (exact mode only) so that
  // ScanAtExit can tell which its memory still points to.
  void WatchExit(pid_t pid) { watch_exit_.insert(pid); }
  // pid is stopped at its exit (ptrace's PTRACE_EVENT_EXIT), its memory
  // whole: reads what its ring holds, scans its memory (client/exit_scan.h)
  // and keeps, for its end, which live blocks are still pointed to.
  // options: the agent's file to skip, the main thread's registers (the
  // ring directory is skipped anyway).
  void ScanAtExit(pid_t pid, ExitScanOptions options);
  // The end of pid (exact mode) says why its exit was not scanned, unless
  // ScanAtExit said otherwise.
  void ExitNotScanned(pid_t pid, const std::string& why);
  // Ends what is known to have ended, flushes everything, and waits for the
  // server to acknowledge it all.
  absl::Status Finish(absl::Duration timeout);

  // Process ids (16 hex digits) of every process seen, in discovery order
  // (with remember_processes).
  std::vector<std::string> process_ids() const;
  // Processes being forwarded: an ended one is let go of (its mapping, its
  // stream and threads, its symbols) once the server has acknowledged all
  // of it.
  size_t tracked() const { return tracked_.size(); }
  // Readable when a ring may have come or gone (a process started): poll(2)
  // on it beside the pacer's sleep to find it at once. -1 if none.
  int discovery_fd() const { return ring_dir_changes_.fd(); }
  // Rings found and not read (another version's, another user's...), each
  // said on stderr when found.
  size_t rings_ignored() const { return rings_ignored_; }
  uint64_t dropped_events() const;

 private:
  struct Tracked;
  void Discover();
  // Reads what the ring holds; returns the lane space read, in quarters of
  // one of its lanes.
  double Drain(Tracked& t);
  uint64_t Intern(Tracked& t, const RingRecord& rec);
  // Sends the batch being built. unread: records already taken from the
  // ring but not yet added (the rest of a run): the batch's ring positions
  // stop before them.
  void Flush(Tracked& t, bool force, std::span<const RingRecord> unread = {});
  // The server refused t's stream: said once, with its reason.
  bool Refused(Tracked& t);
  void End(Tracked& t);
  void Retire();
  // Gives the ring space of acknowledged batches back to the agent.
  void ReleaseAcked(Tracked& t);
  // Whether t may be read: a resumed process once the server said where.
  bool Ready(Tracked& t);

  ForwarderOptions options_;
  DirChanges ring_dir_changes_{options_.ring_dir};  // Discover reads the directory only when told
  ObjectCache objects_;
  std::string host_;
  std::map<std::string, std::unique_ptr<Tracked>> tracked_;  // by ring path
  std::vector<std::string> ids_;    // with remember_processes
  uint64_t retired_dropped_ = 0;  // dropped events of processes let go of
  // Files in the directory never to read (again): not our rings, or rings
  // already ended that could not be removed. Forgotten once they are gone.
  absl::flat_hash_set<std::string> rejected_;
  size_t rings_ignored_ = 0;
  absl::flat_hash_set<pid_t> watch_exit_;
  // A run of records read from one ring at a time (Drain).
  static constexpr size_t kRecordsPerRead = 128;
  std::vector<RingRecord> records_;
};

}  // namespace cgoheap::client
