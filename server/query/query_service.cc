#include "server/query/query_service.h"

#include <chrono>

#include "server/ingest/ingest_service.h"

namespace cgoheap::server {
namespace {

// Runs fn, records its latency, and finishes the call with its status.
template <typename Fn>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, ServerMetrics* metrics,
                                 const char* method, Fn fn) {
  auto start = std::chrono::steady_clock::now();
  absl::Status st = fn();
  if (metrics != nullptr) {
    metrics->ObserveQuery(
        method, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(st));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* QueryService::ListProcesses(grpc::CallbackServerContext* ctx,
                                                      const v1::ListProcessesRequest* req,
                                                      v1::ListProcessesResponse* resp) {
  return Answer(ctx, metrics_, "ListProcesses", [&] {
    *resp = state_->ListProcesses(*req);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Leaks(grpc::CallbackServerContext* ctx,
                                              const v1::LeaksRequest* req,
                                              v1::LeaksResponse* resp) {
  return Answer(ctx, metrics_, "Leaks", [&] {
    absl::StatusOr<v1::LeaksResponse> r = state_->Leaks(*req);
    if (!r.ok()) return r.status();
    *resp = std::move(*r);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Top(grpc::CallbackServerContext* ctx,
                                            const v1::TopRequest* req, v1::TopResponse* resp) {
  return Answer(ctx, metrics_, "Top", [&] {
    absl::StatusOr<v1::TopResponse> r = state_->Top(*req);
    if (!r.ok()) return r.status();
    *resp = std::move(*r);
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::Leak>* QueryService::Watch(grpc::CallbackServerContext* /*ctx*/,
                                                        const v1::WatchRequest* req) {
  return new WatchStream(&hub_, req->service());
}

}  // namespace cgoheap::server
