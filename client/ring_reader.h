// The forwarder's side of an agent ring (agent/ring.h): maps the ring file,
// merges the records of its lanes into one order that never puts an event
// before one it depends on, and gives the space back.
//
// The ring is written by the target, which may be buggy or hostile: every
// value is checked before it places a read, read once (the checked copy is
// what is used), and every access to the mapping is guarded (FaultGuard), so
// a ring file truncated under the reader damages that ring only.
//
//   RingReader r;
//   if (r.Open(path)) while (r.Next(&rec)) { ... } ; r.Release();
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "agent/ring.h"

namespace cgoheap::client {

// Who the process is, as its agent wrote it at start-up: copied once at
// Attach, so nothing the target writes later changes it.
struct RingIdentity {
  // The ring file's owner: the user the agent ran as (0 for Attach).
  uid_t owner_uid = 0;
  gid_t owner_gid = 0;
  int32_t pid = 0;
  int32_t ppid = 0;
  int64_t start_unix_nanos = 0;
  uint64_t sample_bytes = 0;
  uint32_t flags = 0;
  uint32_t foreign_allocator = 0;  // RingHeader::foreign_allocator
  ring::Clock clock = ring::Clock::kCounter;
  std::string exe;      // as readlink gave it (may end in " (deleted)")
  std::string cmdline;  // NUL-separated
  std::string service;
};

struct RingRecord {
  uint64_t key;  // the record's clock value (ring.h)
  uint64_t pos;  // where it starts in its lane
  uint32_t lane;
  ring::Kind kind;  // kAlloc or kFree (a taken allocation reads as kAlloc)
  uint64_t header;  // its header word as read
  ring::Api api;
  uint64_t address;
  uint64_t size;
  int nframes;
  bool frames_cut;  // the stack went on past these frames (ring.h, kHeaderFramesCut)
  uint64_t frames[ring::kMaxFrames];
};

// Not thread-safe: one reader per ring.
class RingReader {
 public:
  RingReader() = default;
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // Opens a ring file: a regular file, never through a symlink, never
  // blocking. False for anything that is not a ring of this version, with
  // the reason in open_error().
  bool Open(const std::string& path);
  const std::string& open_error() const { return open_error_; }
  // Reads a ring already mapped in this process (not owned). Tests use it so
  // that writer and reader share one mapping, which ThreadSanitizer needs to
  // see their synchronization.
  bool Attach(ring::RingHeader* header, size_t bytes);
  // Reads the next record in key order; false when none is ready yet.
  bool Next(RingRecord* rec);
  // Reads up to max records in key order into out[0..n), and returns n (0:
  // none ready yet). One guarded pass for all: what the forwarder uses. It
  // looks at the lanes again (a new round) at most once: fewer than max
  // means the records there at that look are all read.
  size_t NextMany(RingRecord* out, size_t max);
  // Hands consumed space back to the writers (call after a run of Next).
  void Release();
  // Where the reader stands in each lane (lane i at index i): everything
  // before was returned by Next.
  std::vector<uint64_t> Positions() const;
  // The owners' counts of rolled-back pairs as far as this reader has
  // counted them (in cancelled()), per lane, for ReleaseTo.
  std::vector<uint64_t> RolledBackCounted() const;
  // Hands back the space before positions (never beyond what was read): the
  // forwarder does so once the server has made those events durable, so
  // that a forwarder restarted after a crash can read them again. With the
  // RolledBackCounted() of the same moment, a restarted reader also counts
  // the rolled-back pairs from there (ring.h, "Rolled-back pairs").
  void ReleaseTo(const std::vector<uint64_t>& positions,
                 const std::vector<uint64_t>& rolled_back = {});
  // Before the first Next: starts reading each lane at positions (where the
  // server says a forwarder before this one stopped), handing back the space
  // before them. Positions behind a lane's tail are ignored.
  void ResumeAt(const std::vector<uint64_t>& positions);
  // The most words read but not handed back in any lane, and a lane's size.
  uint64_t MaxUnreleased() const;
  uint64_t lane_words() const { return lane_words_; }
  // The process id stored in the ring by the forwarder that first read it,
  // or, if none did, `fresh`, now stored there. 0 if the ring is damaged.
  uint64_t ClaimProcessId(uint64_t fresh);
  // The same for the stream key (ring::StreamKey).
  uint64_t ClaimStreamKey(uint64_t fresh);
  // Lets a process waiting for the forwarder's look go on
  // (ring::RingHeader::tracer_verdict).
  void TellLookedAt();
  // Words reserved in the shared lane but never committed: only meaningful
  // once the process is gone (a writer died mid-record).
  uint64_t Uncommitted();
  // Why reading this ring stopped for good, or nullptr: the file is not
  // what the protocol allows (a writer outside it, a damaged file), or it
  // was truncated under the reader.
  const char* damage() const;
  // The process is gone: no record will ever be completed any more, so
  // nothing waits for one (see StartRound).
  void WritersGone() { writers_gone_ = true; }
  // Tests: called in each round right after a lane's head was read, to let
  // writers run at exactly that point.
  void SetRoundHookForTest(void (*hook)(uint32_t lane, void* arg), void* arg) {
    round_hook_ = hook;
    round_hook_arg_ = arg;
  }

  const RingIdentity& identity() const { return identity_; }
  // The mappings text, read consistently (seqlock); empty if unavailable.
  std::string Maps();
  // The agent's counters; the last values read once the ring is damaged.
  uint64_t dropped_events();
  uint64_t unwind_failures();
  // Allocations their own thread freed before this reader took them
  // (ring.h, "Cancelled pairs" and "Rolled-back pairs"), so far: each a
  // pair the forwarder never saw.
  uint64_t cancelled() const { return cancelled_; }
  // Words of lane space this reader has read past so far, records taken
  // and records skipped as cancelled (pairs rolled back used none): how
  // fast the lanes fill.
  uint64_t words_read() const { return words_read_; }

 private:
  struct Cursor {
    uint64_t pos = 0;       // next word to read
    uint64_t released = 0;  // words given back to the writer(s)
    uint64_t eligible = 0;  // records before it may be taken this round (first look)
    uint64_t limit = 0;     // records before it are seen this round (second look)
    uint64_t key = 0;       // key of the record at pos, when ready
    uint64_t floor = 0;     // lane 0: keys are made monotonic (see .cc)
    uint64_t header = 0;    // the record's header word at pos, as checked when ready
    bool ready = false;     // a record at pos, seen this round
    bool unfinished = false;  // lane 0: the record at pos is reserved, not yet written
    uint64_t rolled_back = 0;  // the owner's count of rolled-back pairs, last read
    uint64_t seen = 0;         // the most this reader has told the owner it looked at
  };
  bool Check(ring::RingHeader* h, size_t bytes);
  template <typename T, typename F>
  T Guarded(const T& fallback, F f);
  uint64_t Claim(std::atomic<uint64_t>* word, uint64_t fresh);
  // *may_look: a new round may be started (once: it is then cleared).
  bool NextRecord(RingRecord* rec, bool* may_look);
  void Confirm(RingRecord* recs, size_t n);
  void StartRound();
  void Peek(uint32_t lane);
  uint64_t LookAtHead(ring::LaneDesc& desc, Cursor* c);
  std::vector<uint64_t> PerLane(uint64_t Cursor::*field) const;
  // Lane 0: the end of its run of committed records from pos, up to head.
  uint64_t CommittedEnd(uint64_t head);
  void ReleaseLanes(const std::vector<uint64_t>& positions);
  static void StoreTail(ring::LaneDesc& desc, uint64_t to);

  // The lane's words, from the geometry checked at Attach: the target can
  // write its header at any time, so nothing that places a read is taken
  // from the mapping again.
  uint64_t* Lane(uint32_t lane) const;

  ring::RingHeader* header_ = nullptr;
  std::string open_error_;
  RingIdentity identity_;
  uint64_t cancelled_ = 0;
  uint64_t words_read_ = 0;
  uint64_t dropped_events_ = 0;
  uint64_t unwind_failures_ = 0;
  uint64_t lane_words_ = 0;
  bool cancellable_ = false;  // allocations may be cancelled (Confirm)
  uint32_t lane_count_ = 0;
  size_t bytes_ = 0;
  bool owned_ = false;
  std::vector<Cursor> lanes_;
  // Lanes with a record seen this round, with their keys. Few lanes are
  // ready in a round (a thread each): the smallest key is found by a scan;
  // past kScanLanes, ready_ is a min-heap instead (heap_).
  static constexpr size_t kScanLanes = 16;
  std::vector<std::pair<uint64_t, uint32_t>> ready_;
  bool heap_ = false;
  // Records with a key at or above it wait (lane 0 holds a record still being
  // written, whose key is at least its floor); UINT64_MAX: none.
  uint64_t blocker_ = UINT64_MAX;
  bool corrupt_ = false;
  bool truncated_ = false;
  bool writers_gone_ = false;
  void (*round_hook_)(uint32_t, void*) = nullptr;
  void* round_hook_arg_ = nullptr;
};

}  // namespace cgoheap::client
