// Query API: process listing and leak reports, answered from HeapState.
#pragma once

#include "cgoheap.grpc.pb.h"
#include "server/auth/auth.h"
#include "server/ingest/heap_state.h"
#include "server/metrics/metrics.h"
#include "server/query/watch_hub.h"

namespace cgoheap::server {

// Thread-safe.
class QueryService final : public v1::Query::CallbackService {
 public:
  // auth: who may read (nullptr: anyone).
  // max_watchers: Watch streams open at once; more get RESOURCE_EXHAUSTED.
  QueryService(HeapState* state, ServerMetrics* metrics, const TokenAuth* auth = nullptr,
               size_t max_watchers = 256)
      : state_(state), metrics_(metrics), auth_(auth), max_watchers_(max_watchers) {
    state_->SetLeakSink(&hub_);
  }
  ~QueryService() override { state_->SetLeakSink(nullptr); }

  grpc::ServerUnaryReactor* ListProcesses(grpc::CallbackServerContext* ctx,
                                          const v1::ListProcessesRequest* req,
                                          v1::ListProcessesResponse* resp) override;
  grpc::ServerUnaryReactor* Leaks(grpc::CallbackServerContext* ctx, const v1::LeaksRequest* req,
                                  v1::LeaksResponse* resp) override;
  grpc::ServerUnaryReactor* Top(grpc::CallbackServerContext* ctx, const v1::TopRequest* req,
                                v1::TopResponse* resp) override;
  grpc::ServerUnaryReactor* Profile(grpc::CallbackServerContext* ctx,
                                    const v1::ProfileRequest* req,
                                    v1::ProfileResponse* resp) override;
  grpc::ServerWriteReactor<v1::Leak>* Watch(grpc::CallbackServerContext* ctx,
                                            const v1::WatchRequest* req) override;

 private:
  HeapState* const state_;
  ServerMetrics* const metrics_;
  const TokenAuth* const auth_;
  const size_t max_watchers_;
  WatchHub hub_;
};

}  // namespace cgoheap::server
