// The agent stream: one bidirectional gRPC stream per process, a reactor per
// stream (callback API) that deletes itself in OnDone.
//
// The stream is taken as raw bytes and parsed here: a message gRPC cannot
// parse would otherwise look exactly like the client closing its side, and
// the stream would end with OK while the client waits for an ack that never
// comes. Here such a message ends the stream with INVALID_ARGUMENT saying
// which message and why.
#pragma once

#include "cgoheap.grpc.pb.h"
#include "server/auth/auth.h"
#include "server/grpc_status.h"
#include "server/ingest/heap_state.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {

// Thread-safe.
class IngestService final : public v1::Ingest::WithRawCallbackMethod_Stream<v1::Ingest::Service> {
 public:
  // auth: who may stream (nullptr: anyone).
  IngestService(HeapState* state, ServerMetrics* metrics, const TokenAuth* auth = nullptr)
      : state_(state), metrics_(metrics), auth_(auth) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Stream(
      grpc::CallbackServerContext* context) override;

 private:
  HeapState* const state_;
  ServerMetrics* const metrics_;
  const TokenAuth* const auth_;
};


}  // namespace cgoheap::server
