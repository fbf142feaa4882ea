// The forwarder's side of an agent ring (agent/ring.h): maps the ring file,
// consumes committed records in order, and gives the space back.
//
//   RingReader r;
//   if (r.Open(path)) while (r.Next(&rec)) { ... } ; r.Release();
#pragma once

#include <cstdint>
#include <string>

#include "agent/ring.h"

namespace cgoheap::client {

struct RingRecord {
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
  // Reads the next committed record; false when none is ready yet.
  bool Next(RingRecord* rec);
  // Hands consumed space back to the writers (call after a run of Next).
  void Release();
  // Words reserved by writers but never committed: only meaningful once the
  // process is gone (its writers died mid-record).
  uint64_t Uncommitted() const;

  const ring::RingHeader& header() const { return *header_; }
  // The mappings text, read consistently (seqlock); empty if unavailable.
  std::string Maps() const;
  uint64_t dropped_events() const;

 private:
  ring::RingHeader* header_ = nullptr;
  size_t bytes_ = 0;
  bool owned_ = false;
  uint64_t pos_ = 0;       // next word to read
  uint64_t released_ = 0;  // words given back to the writers
  bool corrupt_ = false;
};

}  // namespace cgoheap::client
