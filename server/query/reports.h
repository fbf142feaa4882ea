// The reports cgoheapd answers queries with, computed from HeapState's read
// API (ForEachProcess, FindStack): leaks grouped by stack across processes,
// the live heap's top, and each service's growing stacks for the metrics.
// HeapState keeps the data and finds the leaks (with server/leak/); what is
// shown of them, and how it is grouped, is decided here.
//
//   absl::StatusOr<v1::LeaksResponse> leaks = LeaksReport(state, request);
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "cgoheap.pb.h"
#include "server/ingest/heap_state.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {

// The filter of a request's service and process id ("" for any); an id
// that is not hex is INVALID_ARGUMENT.
absl::StatusOr<HeapState::ProcessFilter> FilterOf(const std::string& service,
                                                  const std::string& process_id);

// ForEachProcess's NotFound for a filter's process id, naming the id as the
// request spelled it; any other status as it is.
absl::Status NamedAsAsked(const absl::Status& st, const std::string& process_id);

// Growth leaks of running processes (not lost), then exit leaks of ended ones;
// each stack's leak summed over the processes that have it.
absl::StatusOr<v1::LeaksResponse> LeaksReport(const HeapState& state, const v1::LeaksRequest& req);

// The live C heap of running processes (not lost), by stack, function or line.
absl::StatusOr<v1::TopResponse> TopReport(const HeapState& state, const v1::TopRequest& req);

// Per service with running processes: bytes in stacks flagged as growing, how
// many such stacks, and the top_k largest.
absl::flat_hash_map<std::string, ServiceSuspects> Suspects(const HeapState& state, int top_k);

// The frame that stands for a stack in one line: the first frame of the
// program's own code, else the allocator's caller; -1 for an empty stack.
int SiteFrame(const HeapState::StackEntry& e);

}  // namespace cgoheap::server
