// What cgoheapd serves on its HTTP port (--metrics=HOST:PORT), with the query
// API's authentication (a query token, when the server has query tokens):
//
//   /metrics              Prometheus text format
//   /debug/pprof/heap     running processes' live C heap as a pprof profile
//   /debug/pprof/leaks    the leaks (growth and exit) as a pprof profile
//   /                     this list
//
// The profiles take ?service=NAME, ?process=ID, ?all=1 (runtime and C-library
// allocations too) and, for the heap, ?ago=DURATION (as it was then, within
// the leak window), as `cgoheap pprof` does:
//
//   go tool pprof -top 'http://127.0.0.1:9464/debug/pprof/heap?service=api'
#pragma once

#include "server/auth/auth.h"
#include "server/http/http_server.h"
#include "server/ingest/heap_state.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {

// auth: null, or who may read.
void AddEndpoints(HttpServer& http, const HeapState* state, ServerMetrics* metrics,
                  const TokenAuth* auth);

}  // namespace cgoheap::server
