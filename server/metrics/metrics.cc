#include "server/metrics/metrics.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <utility>

#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"

namespace cgoheap::server {
namespace {

const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

}  // namespace

ServerMetrics::ServerMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using namespace prometheus;
  events_ = &BuildCounter()
                 .Name("cgoheap_ingest_events_total")
                 .Help("Allocation and free events acknowledged")
                 .Register(*registry_)
                 .Add({});
  batches_ = &BuildCounter()
                  .Name("cgoheap_ingest_batches_total")
                  .Help("Event batches acknowledged")
                  .Register(*registry_)
                  .Add({});
  errors_ = &BuildCounter()
                 .Name("cgoheap_ingest_errors_total")
                 .Help("Ingest messages rejected (malformed, out of order, storage failure)")
                 .Register(*registry_)
                 .Add({});
  storage_errors_ = &BuildCounter()
                         .Name("cgoheap_storage_errors_total")
                         .Help("Background storage work that failed (snapshots); retried later")
                         .Register(*registry_)
                         .Add({});
  auth_failures_ = &BuildCounter()
                        .Name("cgoheap_auth_failures_total")
                        .Help("Calls refused for their credentials, by the role the call needed "
                              "and why (missing, unknown, wrong_role)")
                        .Register(*registry_);
  for (const char* role : {"ingest", "query"}) {
    for (const char* reason : {"missing", "unknown", "wrong_role"}) {
      auth_failures_->Add({{"role", role}, {"reason", reason}});
    }
  }
  limit_refusals_ = &BuildCounter()
                         .Name("cgoheap_limit_refusals_total")
                         .Help("Messages and calls refused at one of cgoheapd's limits "
                               "(RESOURCE_EXHAUSTED), by limit")
                         .Register(*registry_);
  for (const char* limit : {"processes", "stacks", "live_blocks", "process_live_blocks",
                            "process_stacks", "hello_bytes", "watchers"}) {
    limit_refusals_->Add({{"limit", limit}});
  }
  ack_latency_ = &BuildHistogram()
                      .Name("cgoheap_ack_latency_seconds")
                      .Help("Time from receiving a message to acknowledging it durable")
                      .Register(*registry_)
                      .Add({}, kLatencyBuckets);
  query_latency_ = &BuildHistogram()
                        .Name("cgoheap_query_latency_seconds")
                        .Help("Query RPC latency")
                        .Register(*registry_);
  storage_bytes_ = &BuildGauge()
                        .Name("cgoheap_storage_bytes")
                        .Help("RocksDB SST bytes on disk")
                        .Register(*registry_)
                        .Add({});
  processes_ = &BuildGauge()
                    .Name("cgoheap_processes")
                    .Help("Processes known to the server, by service and state")
                    .Register(*registry_);
  live_bytes_ = &BuildGauge()
                     .Name("cgoheap_live_bytes")
                     .Help("C heap bytes live in running processes (estimated when sampled)")
                     .Register(*registry_);
  dropped_ = &BuildGauge()
                  .Name("cgoheap_agent_dropped_events")
                  .Help("Events the agents dropped because the ring was full, by service")
                  .Register(*registry_);
  unwind_failures_ = &BuildGauge()
                         .Name("cgoheap_agent_unwind_failures")
                         .Help("Allocations whose stack the agents cut short (the Go frames "
                               "above a cgo call, or C frames, not recovered), by service")
                         .Register(*registry_);
  crossing_unknown_ = &BuildGauge()
                          .Name("cgoheap_agent_go_crossing_unknown_processes")
                          .Help("Processes built by a Go release whose cgo calls the agent does "
                                "not understand (no Go frames in their stacks), by service")
                          .Register(*registry_);
  foreign_allocator_ = &BuildGauge()
                           .Name("cgoheap_agent_foreign_allocator_processes")
                           .Help("Processes whose allocator functions the agent does not see "
                                 "(the program defines malloc itself: a statically linked "
                                 "jemalloc, tcmalloc or mimalloc), by service")
                           .Register(*registry_);
  damaged_rings_ = &BuildGauge()
                       .Name("cgoheap_agent_damaged_rings")
                       .Help("Processes whose ring the forwarder stopped reading (truncated "
                             "under it, or written outside the protocol): their events after "
                             "that point are missing, by service")
                       .Register(*registry_);
  suspect_bytes_ = &BuildGauge()
                        .Name("cgoheap_leak_suspect_bytes")
                        .Help("Live bytes in stacks flagged as growth leaks in running processes")
                        .Register(*registry_);
  suspect_stack_bytes_ = &BuildGauge()
                             .Name("cgoheap_leak_suspect_stack_bytes")
                             .Help("Live bytes of the top-K growing stacks of each service "
                                   "(site: where the user's code allocated)")
                             .Register(*registry_);
  suspect_stacks_ = &BuildGauge()
                         .Name("cgoheap_leak_suspect_stacks")
                         .Help("Distinct stacks flagged as growth leaks in running processes")
                         .Register(*registry_);
}

ServerMetrics::~ServerMetrics() = default;

std::string ServerMetrics::Text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void ServerMetrics::OnBatch(int events) {
  batches_->Increment();
  events_->Increment(events);
}
void ServerMetrics::OnIngestError() { errors_->Increment(); }
void ServerMetrics::OnStorageError() { storage_errors_->Increment(); }
void ServerMetrics::OnAuthFailure(const char* role, const char* reason) {
  auth_failures_->Add({{"role", role}, {"reason", reason}}).Increment();
}
void ServerMetrics::OnLimitRefusal(const char* limit) {
  limit_refusals_->Add({{"limit", limit}}).Increment();
}
void ServerMetrics::ObserveAck(double seconds) { ack_latency_->Observe(seconds); }
void ServerMetrics::ObserveQuery(const std::string& method, double seconds) {
  query_latency_->Add({{"method", method}}, kLatencyBuckets).Observe(seconds);
}
void ServerMetrics::SetStorageBytes(double bytes) { storage_bytes_->Set(bytes); }

std::string SiteLabel(std::string site) {
  constexpr size_t kMax = 200, kKeep = 180;
  if (site.size() <= kMax) return site;
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : site) h = (h ^ c) * 1099511628211ULL;
  site.resize(kKeep);
  return absl::StrCat(site, "~", absl::Hex(h, absl::kZeroPad16));
}

void ServerMetrics::SetBuildInfo(const std::string& version, const std::string& commit,
                                 const LibraryVersions& libraries) {
  std::map<std::string, std::string> labels = {{"version", version}, {"commit", commit}};
  // Label names: the library's name in lower case, letters and digits.
  for (const auto& [name, v] : libraries) {
    std::string key;
    for (char c : name) {
      if (std::isalnum(static_cast<unsigned char>(c))) key += static_cast<char>(std::tolower(c));
    }
    labels[key] = v;
  }
  prometheus::BuildGauge()
      .Name("cgoheap_build_info")
      .Help("Which build of cgoheapd runs: its version, commit and libraries (always 1)")
      .Register(*registry_)
      .Add(labels)
      .Set(1);
}

void ServerMetrics::RefreshFleet(const v1::ListProcessesResponse& list,
                                 const absl::flat_hash_map<std::string, ServiceSuspects>& suspects) {
  // Which services get series of their own: the max_services_ that matter
  // most (growing memory, then live memory, then processes); the others
  // are summed under service="other", so a client inventing names cannot
  // grow the number of series.
  struct Rank {
    double suspect = 0, live = 0, processes = 0;
  };
  std::map<std::string, Rank> ranks;
  for (const auto& p : list.processes()) {
    Rank& r = ranks[p.hello().service()];
    r.processes += 1;
    if (p.state() == "running") r.live += static_cast<double>(p.live_bytes());
  }
  for (const auto& [svc, s] : suspects) ranks[svc].suspect = s.bytes;
  std::vector<std::pair<const std::string*, const Rank*>> order;
  for (const auto& [svc, r] : ranks) order.emplace_back(&svc, &r);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    if (a.second->suspect != b.second->suspect) return a.second->suspect > b.second->suspect;
    if (a.second->live != b.second->live) return a.second->live > b.second->live;
    if (a.second->processes != b.second->processes) return a.second->processes > b.second->processes;
    return *a.first < *b.first;
  });
  absl::flat_hash_map<std::string, std::string> label;  // service -> its label value
  for (size_t i = 0; i < order.size(); ++i) {
    label[*order[i].first] = i < max_services_ ? *order[i].first : std::string(kOtherServices);
  }

  std::map<std::pair<std::string, std::string>, double> counts;
  std::map<std::string, double> live, dropped, unwind_failures, crossing_unknown, foreign, damaged;
  std::map<std::string, double> suspect_bytes, suspect_stacks;
  for (const auto& p : list.processes()) {
    const std::string& svc = label[p.hello().service()];
    for (const char* state : {"running", "lost", "exited", "killed", "exec"}) counts[{svc, state}] += 0;
    counts[{svc, p.state()}] += 1;
    if (p.state() == "running") live[svc] += static_cast<double>(p.live_bytes());
    live.try_emplace(svc, 0);
    dropped[svc] += static_cast<double>(p.dropped_events());
    unwind_failures[svc] += static_cast<double>(p.unwind_failures());
    crossing_unknown[svc] += p.hello().go_crossing_unknown() && p.state() == "running" ? 1 : 0;
    foreign[svc] += p.hello().foreign_allocator_size() > 0 && p.state() == "running" ? 1 : 0;
    damaged[svc] += p.ring_damage().empty() ? 0 : 1;
  }
  for (const auto& [svc, s] : suspects) {
    suspect_bytes[label[svc]] += s.bytes;
    suspect_stacks[label[svc]] += static_cast<double>(s.stacks);
  }
  using Series = std::pair<prometheus::Gauge*, prometheus::Family<prometheus::Gauge>*>;
  std::vector<Series> current;
  auto set = [&current](prometheus::Family<prometheus::Gauge>* family,
                        const std::map<std::string, std::string>& labels, double v) {
    prometheus::Gauge& g = family->Add(labels);
    g.Set(v);
    current.emplace_back(&g, family);
  };
  for (const auto& [key, n] : counts) set(processes_, {{"service", key.first}, {"state", key.second}}, n);
  for (const auto& [svc, v] : live) set(live_bytes_, {{"service", svc}}, v);
  for (const auto& [svc, v] : dropped) set(dropped_, {{"service", svc}}, v);
  for (const auto& [svc, v] : unwind_failures) set(unwind_failures_, {{"service", svc}}, v);
  for (const auto& [svc, v] : crossing_unknown) set(crossing_unknown_, {{"service", svc}}, v);
  for (const auto& [svc, v] : foreign) set(foreign_allocator_, {{"service", svc}}, v);
  for (const auto& [svc, v] : damaged) set(damaged_rings_, {{"service", svc}}, v);
  // Every service shown gets both series (0 when nothing grows), so alerts
  // can tell "no leak" from "no data".
  for (const auto& [svc, v] : live) {
    set(suspect_bytes_, {{"service", svc}}, suspect_bytes[svc]);
    set(suspect_stacks_, {{"service", svc}}, suspect_stacks[svc]);
  }
  // Per-stack series: exactly the current top-K of each service shown.
  for (const auto& [svc, s] : suspects) {
    if (label[svc] != svc) continue;
    for (const auto& st : s.top) {
      set(suspect_stack_bytes_, {{"service", svc}, {"stack", st.id}, {"site", st.site}}, st.bytes);
    }
  }
  // Series set last time and not now are removed: the number of series
  // stays bounded however many services and stacks come and go.
  std::sort(current.begin(), current.end());
  for (const Series& old : fleet_series_) {
    if (!std::binary_search(current.begin(), current.end(), old)) old.second->Remove(old.first);
  }
  fleet_series_ = std::move(current);
}

}  // namespace cgoheap::server
