#include "server/query/query_service.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/grpc_status.h"
#include "server/query/pprof.h"
#include "server/query/reports.h"

namespace cgoheap::server {
namespace {

// A stream refused before it started (its credentials).
class RefusedWatch final : public grpc::ServerWriteReactor<v1::Leak> {
 public:
  explicit RefusedWatch(const grpc::Status& st) { Finish(st); }
  void OnDone() override { delete this; }
};

// Checks the caller may read, runs fn, records its latency, and finishes the
// call with its status.
template <typename Fn>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, ServerMetrics* metrics,
                                 const TokenAuth* auth, const char* method, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (auth != nullptr) {
    if (grpc::Status allowed = auth->Check(Role::kQuery, ctx->client_metadata()); !allowed.ok()) {
      reactor->Finish(allowed);
      return reactor;
    }
  }
  auto start = std::chrono::steady_clock::now();
  absl::Status st = fn();
  if (metrics != nullptr) {
    metrics->ObserveQuery(
        method, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  reactor->Finish(ToGrpc(st));
  return reactor;
}

}  // namespace

// A page of a listing in HeapState's order (start time, then id); the token
// names the last process of the page before ("START:ID"), so a page is the
// same whatever started since.
absl::Status Page(const v1::ListProcessesRequest& req, v1::ListProcessesResponse* all,
                  v1::ListProcessesResponse* page) {
  constexpr uint32_t kDefault = 1000, kMax = 5000;
  const uint32_t size = req.page_size() == 0 ? kDefault : std::min(req.page_size(), kMax);
  int from = 0;
  if (!req.page_token().empty()) {
    std::vector<std::string> parts = absl::StrSplit(req.page_token(), ':');
    int64_t start = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &start) || parts[1].size() != 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page_token '", req.page_token(),
          "' is not one this server gave: pass the next_page_token of the page before, or none"));
    }
    auto after = [&](const v1::ProcessInfo& p) {
      return p.hello().start_unix_nanos() > start ||
             (p.hello().start_unix_nanos() == start && p.process_id() > parts[1]);
    };
    while (from < all->processes_size() && !after(all->processes(from))) ++from;
  }
  const int to = std::min(all->processes_size(), from + static_cast<int>(size));
  for (int i = from; i < to; ++i) page->mutable_processes()->Add()->Swap(all->mutable_processes(i));
  if (to < all->processes_size()) {
    const v1::ProcessInfo& last = page->processes(page->processes_size() - 1);
    page->set_next_page_token(
        absl::StrCat(last.hello().start_unix_nanos(), ":", last.process_id()));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* QueryService::ListProcesses(grpc::CallbackServerContext* ctx,
                                                      const v1::ListProcessesRequest* req,
                                                      v1::ListProcessesResponse* resp) {
  return Answer(ctx, metrics_, auth_, "ListProcesses", [&] {
    v1::ListProcessesResponse all = state_->ListProcesses(*req);
    return Page(*req, &all, resp);
  });
}

grpc::ServerUnaryReactor* QueryService::Leaks(grpc::CallbackServerContext* ctx,
                                              const v1::LeaksRequest* req,
                                              v1::LeaksResponse* resp) {
  return Answer(ctx, metrics_, auth_, "Leaks", [&] {
    absl::StatusOr<v1::LeaksResponse> r = LeaksReport(*state_, *req);
    if (!r.ok()) return r.status();
    *resp = std::move(*r);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Top(grpc::CallbackServerContext* ctx,
                                            const v1::TopRequest* req, v1::TopResponse* resp) {
  return Answer(ctx, metrics_, auth_, "Top", [&] {
    absl::StatusOr<v1::TopResponse> r = TopReport(*state_, *req);
    if (!r.ok()) return r.status();
    *resp = std::move(*r);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Profile(grpc::CallbackServerContext* ctx,
                                                const v1::ProfileRequest* req,
                                                v1::ProfileResponse* resp) {
  return Answer(ctx, metrics_, auth_, "Profile", [&] {
    absl::StatusOr<server::Profile> p = BuildProfile(*state_, *req);
    if (!p.ok()) return p.status();
    resp->set_profile(std::move(p->gzipped));
    resp->set_processes(p->processes);
    resp->set_samples(p->samples);
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::Leak>* QueryService::Watch(grpc::CallbackServerContext* ctx,
                                                        const v1::WatchRequest* req) {
  if (auth_ != nullptr) {
    if (grpc::Status allowed = auth_->Check(Role::kQuery, ctx->client_metadata()); !allowed.ok()) {
      return new RefusedWatch(allowed);
    }
  }
  if (hub_.Count() >= max_watchers_) {
    if (metrics_ != nullptr) metrics_->OnLimitRefusal("watchers");
    return new RefusedWatch(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("cgoheapd serves ", max_watchers_,
                     " watch streams already, its limit (--max-watchers): close one, or raise it")));
  }
  return new WatchStream(&hub_, req->service());
}

}  // namespace cgoheap::server
