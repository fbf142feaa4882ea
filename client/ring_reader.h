// The forwarder's side of an agent ring (agent/ring.h): maps the ring file,
// merges the records of its lanes into one order that never puts an event
// before one it depends on, and gives the space back.
//
//   RingReader r;
//   if (r.Open(path)) while (r.Next(&rec)) { ... } ; r.Release();
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "agent/ring.h"

namespace cgoheap::client {

struct RingRecord {
  uint64_t key;  // the record's clock value (ring.h)
  uint32_t lane;
  ring::Kind kind;
  ring::Api api;
  uint64_t address;
  uint64_t size;
  int nframes;
  uint64_t frames[ring::kMaxFrames];
};

// Not thread-safe: one reader per ring.
class RingReader {
 public:
  RingReader() = default;
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  bool Open(const std::string& path);
  // Reads a ring already mapped in this process (not owned). Tests use it so
  // that writer and reader share one mapping, which ThreadSanitizer needs to
  // see their synchronization.
  bool Attach(ring::RingHeader* header, size_t bytes);
  // Reads the next record in key order; false when none is ready yet.
  bool Next(RingRecord* rec);
  // Hands consumed space back to the writers (call after a run of Next).
  void Release();
  // Words reserved in the shared lane but never committed: only meaningful
  // once the process is gone (a writer died mid-record).
  uint64_t Uncommitted() const;
  // The file is not what the protocol allows (a writer outside it, or a
  // damaged file): reading stopped there.
  bool corrupt() const { return corrupt_; }
  // The process is gone: no record will ever be completed any more, so
  // nothing waits for one (see StartRound).
  void WritersGone() { writers_gone_ = true; }
  // Tests: called in each round right after a lane's head was read, to let
  // writers run at exactly that point.
  void SetRoundHookForTest(void (*hook)(uint32_t lane, void* arg), void* arg) {
    round_hook_ = hook;
    round_hook_arg_ = arg;
  }

  const ring::RingHeader& header() const { return *header_; }
  // The mappings text, read consistently (seqlock); empty if unavailable.
  std::string Maps() const;
  uint64_t dropped_events() const;
  uint64_t unwind_failures() const;

 private:
  struct Cursor {
    uint64_t pos = 0;       // next word to read
    uint64_t released = 0;  // words given back to the writer(s)
    uint64_t limit = 0;     // the lane's head when this round began
    uint64_t key = 0;       // key of the record at pos, when ready
    uint64_t floor = 0;     // lane 0: keys are made monotonic (see .cc)
    uint64_t header = 0;    // the record's header word at pos, as checked when ready
    bool ready = false;     // a record at pos with key below the cut
    bool unfinished = false;  // lane 0: the record at pos is reserved, not yet written
  };
  void StartRound();
  void Peek(uint32_t lane);

  // The lane's words, from the geometry checked at Attach: the target can
  // write its header at any time, so nothing that places a read is taken
  // from the mapping again.
  uint64_t* Lane(uint32_t lane) const;

  ring::RingHeader* header_ = nullptr;
  uint64_t lane_words_ = 0;
  uint32_t lane_count_ = 0;
  size_t bytes_ = 0;
  bool owned_ = false;
  std::vector<Cursor> lanes_;
  // Lanes with a ready record this round, by key: a min-heap of (key, lane).
  std::vector<std::pair<uint64_t, uint32_t>> ready_;
  uint64_t cut_ = 0;
  bool corrupt_ = false;
  bool writers_gone_ = false;
  void (*round_hook_)(uint32_t, void*) = nullptr;
  void* round_hook_arg_ = nullptr;
};

}  // namespace cgoheap::client
