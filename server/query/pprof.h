// pprof profiles (proto/profile.proto, gzip-compressed) of the live C heap or
// of the leaks, for `go tool pprof` and everything else that reads Go's
// profiles: -top, -list, -traces, -http's flame graph, -diff_base.
//
// Conventions are those of Go's heap profile: the live heap has sample types
// inuse_objects/count and inuse_space/bytes (default inuse_space); leaks have
// leak_objects/count and leak_space/bytes, each sample labelled kind=exit or
// kind=growth. One sample per stack; its locations are the whole stack, C and
// Go, innermost first (the allocator's entry point, then its callers), with
// inlined calls as the Line entries of one location, and each location's
// mapping named by its object and build id. Sampled data carries the unbiased
// estimates, the period is the sampling rate, and the comments say so.
//
//   absl::StatusOr<Profile> p = BuildProfile(state, request);
//   write(fd, p->gzipped.data(), p->gzipped.size());
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "cgoheap.pb.h"
#include "server/ingest/heap_state.h"

namespace cgoheap::server {

struct Profile {
  std::string gzipped;      // profile.proto, gzip-compressed
  uint32_t processes = 0;   // processes that contributed
  uint32_t samples = 0;     // stacks in it
};

// INVALID_ARGUMENT for a bad process id or time, NOT_FOUND for an unknown
// process, OUT_OF_RANGE for a time older than the history kept.
absl::StatusOr<Profile> BuildProfile(const HeapState& state, const v1::ProfileRequest& req);

// gzip (RFC 1952) of data.
absl::StatusOr<std::string> Gzip(const std::string& data);

}  // namespace cgoheap::server
