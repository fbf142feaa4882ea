// Query API: process listing and leak reports, answered from HeapState.
#pragma once

#include "cgoheap.grpc.pb.h"
#include "server/ingest/heap_state.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {

// Thread-safe.
class QueryService final : public v1::Query::CallbackService {
 public:
  QueryService(HeapState* state, ServerMetrics* metrics) : state_(state), metrics_(metrics) {}

  grpc::ServerUnaryReactor* ListProcesses(grpc::CallbackServerContext* ctx,
                                          const v1::ListProcessesRequest* req,
                                          v1::ListProcessesResponse* resp) override;
  grpc::ServerUnaryReactor* Leaks(grpc::CallbackServerContext* ctx, const v1::LeaksRequest* req,
                                  v1::LeaksResponse* resp) override;

 private:
  HeapState* const state_;
  ServerMetrics* const metrics_;
};

}  // namespace cgoheap::server
