// Prometheus metrics of cgoheapd, declared in one place.
//
// Server health: cgoheap_ingest_events_total, cgoheap_ingest_batches_total,
// cgoheap_ingest_errors_total, cgoheap_auth_failures_total{role,reason},
// cgoheap_limit_refusals_total{limit}, cgoheap_ack_latency_seconds,
// cgoheap_query_latency_seconds{method}, cgoheap_storage_bytes,
// cgoheap_build_info{version,commit,grpc,protobuf,rocksdb,prometheuscpp,abseil}.
// Fleet (per service, refreshed from HeapState): cgoheap_processes{service,state},
// cgoheap_live_bytes{service}, cgoheap_agent_dropped_events{service},
// cgoheap_agent_unwind_failures{service},
// cgoheap_agent_go_crossing_unknown_processes{service} (running ones),
// cgoheap_agent_foreign_allocator_processes{service} (running ones),
// cgoheap_agent_damaged_rings{service},
// cgoheap_leak_suspect_bytes{service}, cgoheap_leak_suspect_stacks{service},
// cgoheap_leak_suspect_stack_bytes{service,stack,site} for the top-K growing
// stacks of each service only.
// Labels are bounded: service and state only, never a pid, an address or a
// stack; and only the top services (SetMaxServices, --metrics-max-services)
// have series of their own, the rest summed under service="other".
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/version.h"

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "cgoheap.pb.h"

namespace cgoheap::server {

// Growth leak suspects of one service.
struct ServiceSuspects {
  double bytes = 0;     // live bytes in stacks flagged as growing
  uint64_t stacks = 0;  // distinct stacks flagged
  // The largest growing stacks (at most the server's top-K), for per-stack
  // series: id (16 hex digits), where the user's code allocated, live bytes.
  struct Stack {
    std::string id, site;
    double bytes = 0;
  };
  std::vector<Stack> top;
};

// Thread-safe (prometheus-cpp metrics are).
// A site ("function file:line") as a label value: the full function name
// (C++ names with their namespace, class and parameters, so two functions
// with one short name never merge). A value past 200 characters keeps its
// first 180 and ends with "~" and 16 hex digits of a hash of the whole, so
// it stays unique.
std::string SiteLabel(std::string site);

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();
  // Every metric in Prometheus' text format (what /metrics serves:
  // server/http/endpoints.h).
  std::string Text() const;

  void OnBatch(int events);
  void OnIngestError();
  void OnStorageError();
  // A call refused for its credentials (server/auth/auth.h).
  void OnAuthFailure(const char* role, const char* reason);
  // A message or call refused at one of the server's limits (RESOURCE_EXHAUSTED).
  void OnLimitRefusal(const char* limit);
  void ObserveAck(double seconds);
  void ObserveQuery(const std::string& method, double seconds);
  void SetStorageBytes(double bytes);
  // cgoheap_build_info{version, commit, <library>...} 1: which build runs.
  void SetBuildInfo(const std::string& version, const std::string& commit,
                    const LibraryVersions& libraries);
  // Replaces the per-service gauges from a process listing and the growth
  // leak suspects by service.
  void RefreshFleet(const v1::ListProcessesResponse& processes,
                    const absl::flat_hash_map<std::string, ServiceSuspects>& suspects);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // Services with series of their own; the rest are summed as "other".
  void SetMaxServices(size_t n) { max_services_ = n; }
  static constexpr const char* kOtherServices = "other";

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* events_;
  prometheus::Counter* batches_;
  prometheus::Counter* errors_;
  prometheus::Counter* storage_errors_;
  prometheus::Family<prometheus::Counter>* auth_failures_;
  prometheus::Family<prometheus::Counter>* limit_refusals_;
  prometheus::Histogram* ack_latency_;
  prometheus::Family<prometheus::Histogram>* query_latency_;
  prometheus::Gauge* storage_bytes_;
  prometheus::Family<prometheus::Gauge>* processes_;
  prometheus::Family<prometheus::Gauge>* live_bytes_;
  prometheus::Family<prometheus::Gauge>* dropped_;
  prometheus::Family<prometheus::Gauge>* unwind_failures_;
  prometheus::Family<prometheus::Gauge>* crossing_unknown_;
  prometheus::Family<prometheus::Gauge>* foreign_allocator_;
  prometheus::Family<prometheus::Gauge>* damaged_rings_;
  prometheus::Family<prometheus::Gauge>* suspect_bytes_;
  prometheus::Family<prometheus::Gauge>* suspect_stacks_;
  prometheus::Family<prometheus::Gauge>* suspect_stack_bytes_;
  // Every fleet series set by the last refresh, sorted.
  std::vector<std::pair<prometheus::Gauge*, prometheus::Family<prometheus::Gauge>*>> fleet_series_;
  size_t max_services_ = 100;
};

}  // namespace cgoheap::server
