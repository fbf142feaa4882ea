#include "server/http/endpoints.h"

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "server/query/pprof.h"

namespace cgoheap::server {
namespace {

int HttpStatusOf(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    default:
      return 500;
  }
}

HttpResponse Refused(const absl::Status& st) {
  HttpResponse r = HttpResponse::Text(HttpStatusOf(st), absl::StrCat(st.message(), "\n"));
  if (r.status == 401) r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"cgoheapd\"");
  return r;
}

// A handler that first checks the caller may read, and records its latency
// as a query (method: the path).
HttpServer::Handler Guarded(const TokenAuth* auth, ServerMetrics* metrics, std::string method,
                            HttpServer::Handler inner) {
  return [auth, metrics, method = std::move(method),
          inner = std::move(inner)](const HttpRequest& req) {
    if (auth != nullptr) {
      if (absl::Status st = auth->CheckHttp(Role::kQuery, req.authorization); !st.ok()) {
        return Refused(st);
      }
    }
    auto start = std::chrono::steady_clock::now();
    HttpResponse r = inner(req);
    if (metrics != nullptr) {
      metrics->ObserveQuery(method, std::chrono::duration<double>(
                                        std::chrono::steady_clock::now() - start).count());
    }
    return r;
  };
}

std::string Param(const HttpRequest& req, const std::string& key) {
  auto it = req.query.find(key);
  return it == req.query.end() ? "" : it->second;
}

// ?all=1, ?all=true, ?all (empty) are true; 0, false and absent are false.
absl::StatusOr<bool> BoolParam(const HttpRequest& req, const std::string& key) {
  auto it = req.query.find(key);
  if (it == req.query.end() || it->second == "0" || it->second == "false") return false;
  if (it->second.empty() || it->second == "1" || it->second == "true") return true;
  return absl::InvalidArgumentError(
      absl::StrCat("?", key, "=", it->second, " is not a yes or no: use ", key, "=1 or ", key, "=0"));
}

HttpResponse ProfileResponse(const HeapState* state, const HttpRequest& req, bool leaks) {
  for (const auto& [key, value] : req.query) {
    if (key != "service" && key != "process" && key != "all" && (leaks || key != "ago")) {
      return HttpResponse::Text(
          400, absl::StrCat("unknown parameter ", key, ": ", leaks ? "/debug/pprof/leaks" : "/debug/pprof/heap",
                            " takes service, process, all", leaks ? "" : " and ago", "\n"));
    }
  }
  v1::ProfileRequest pr;
  pr.set_service(Param(req, "service"));
  pr.set_process_id(Param(req, "process"));
  pr.set_leaks(leaks);
  absl::StatusOr<bool> all = BoolParam(req, "all");
  if (!all.ok()) return Refused(all.status());
  pr.set_all(*all);
  if (std::string ago = Param(req, "ago"); !ago.empty()) {
    absl::StatusOr<double> seconds = ParseDuration(ago);
    if (!seconds.ok()) {
      return HttpResponse::Text(400, absl::StrCat("?ago=", ago, ": ", seconds.status().message(), "\n"));
    }
    pr.set_seconds_ago(*seconds);
  }
  absl::StatusOr<Profile> p = BuildProfile(*state, pr);
  if (!p.ok()) return Refused(p.status());
  HttpResponse r;
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("Content-Disposition",
                         leaks ? "attachment; filename=\"leaks.pb.gz\"" : "attachment; filename=\"heap.pb.gz\"");
  r.body = std::move(p->gzipped);
  return r;
}

}  // namespace

void AddEndpoints(HttpServer& http, const HeapState* state, ServerMetrics* metrics,
                  const TokenAuth* auth) {
  http.Handle("/metrics", Guarded(auth, nullptr, "", [metrics](const HttpRequest&) {
                HttpResponse r;
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r.body = metrics->Text();
                return r;
              }));
  http.Handle("/debug/pprof/heap", Guarded(auth, metrics, "http:heap", [state](const HttpRequest& req) {
                return ProfileResponse(state, req, false);
              }));
  http.Handle("/debug/pprof/leaks", Guarded(auth, metrics, "http:leaks", [state](const HttpRequest& req) {
                return ProfileResponse(state, req, true);
              }));
  http.Handle("/", [](const HttpRequest&) {
    return HttpResponse::Text(
        200,
        "cgoheapd\n"
        "  /metrics              Prometheus metrics\n"
        "  /debug/pprof/heap     live C heap of running processes (pprof profile)\n"
        "  /debug/pprof/leaks    leaks, growth and exit (pprof profile)\n"
        "Profiles take ?service=NAME, ?process=ID, ?all=1, and for the heap ?ago=DURATION:\n"
        "  go tool pprof -top 'http://HOST:PORT/debug/pprof/heap?service=NAME'\n");
  });
}

}  // namespace cgoheap::server
