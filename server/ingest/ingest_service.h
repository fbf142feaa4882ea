// The agent stream: one bidirectional gRPC stream per process, a reactor per
// stream (callback API) that deletes itself in OnDone.
#pragma once

#include "cgoheap.grpc.pb.h"
#include "server/ingest/heap_state.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {

// Thread-safe.
class IngestService final : public v1::Ingest::CallbackService {
 public:
  IngestService(HeapState* state, ServerMetrics* metrics) : state_(state), metrics_(metrics) {}

  grpc::ServerBidiReactor<v1::AgentMessage, v1::IngestAck>* Stream(
      grpc::CallbackServerContext* context) override;

 private:
  HeapState* const state_;
  ServerMetrics* const metrics_;
};

// Maps a status from the state or the store to the gRPC status a client sees.
grpc::Status ToGrpc(const absl::Status& st);

}  // namespace cgoheap::server
