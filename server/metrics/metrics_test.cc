#include "server/metrics/metrics.h"

#include <gtest/gtest.h>

namespace cgoheap::server {
namespace {

// Series of a family as "label=value,..." strings.
std::vector<std::string> Series(ServerMetrics& m, const std::string& family) {
  std::vector<std::string> out;
  for (const auto& f : m.registry()->Collect()) {
    if (f.name != family) continue;
    for (const auto& metric : f.metric) {
      std::string s;
      for (const auto& l : metric.label) s += l.name + "=" + l.value + ",";
      out.push_back(s);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(MetricsTest, PerStackSeriesAreOnlyTheCurrentTopK) {
  ServerMetrics m;
  v1::ListProcessesResponse list;
  list.add_processes()->mutable_hello()->set_service("api");
  list.mutable_processes(0)->set_state("running");
  absl::flat_hash_map<std::string, ServiceSuspects> s;
  s["api"].stacks = 2;
  s["api"].top = {{"0000000000000001", "main.a /a.go:1", 100}, {"0000000000000002", "main.b /b.go:2", 50}};
  m.RefreshFleet(list, s);
  EXPECT_EQ(Series(m, "cgoheap_leak_suspect_stack_bytes"),
            (std::vector<std::string>{"service=api,site=main.a /a.go:1,stack=0000000000000001,",
                                      "service=api,site=main.b /b.go:2,stack=0000000000000002,"}));
  s["api"].top = {{"0000000000000003", "main.c /c.go:3", 70}};
  m.RefreshFleet(list, s);
  EXPECT_EQ(Series(m, "cgoheap_leak_suspect_stack_bytes"),
            (std::vector<std::string>{"service=api,site=main.c /c.go:3,stack=0000000000000003,"}));
  // Services with nothing growing still report 0, so "no leak" differs from "no data".
  m.RefreshFleet(list, {});
  EXPECT_EQ(Series(m, "cgoheap_leak_suspect_stacks"), (std::vector<std::string>{"service=api,"}));
  EXPECT_TRUE(Series(m, "cgoheap_leak_suspect_stack_bytes").empty());
}

// Value of the series of a family with this service label.
double ValueOf(ServerMetrics& m, const std::string& family, const std::string& service) {
  for (const auto& f : m.registry()->Collect()) {
    if (f.name != family) continue;
    for (const auto& metric : f.metric) {
      for (const auto& l : metric.label) {
        if (l.name == "service" && l.value == service) return metric.gauge.value;
      }
    }
  }
  return -1;
}

TEST(MetricsTest, DamagedRingsAreCountedByService) {
  ServerMetrics m;
  v1::ListProcessesResponse list;
  for (const char* damage : {"", "its ring file was truncated while it was read", ""}) {
    v1::ProcessInfo* p = list.add_processes();
    p->mutable_hello()->set_service("api");
    p->set_state("exited");
    p->set_ring_damage(damage);
  }
  list.add_processes()->mutable_hello()->set_service("web");
  m.RefreshFleet(list, {});
  EXPECT_EQ(ValueOf(m, "cgoheap_agent_damaged_rings", "api"), 1);
  EXPECT_EQ(ValueOf(m, "cgoheap_agent_damaged_rings", "web"), 0);
}

TEST(MetricsTest, RunningProcessesWithAForeignAllocatorAreCountedByService) {
  ServerMetrics m;
  v1::ListProcessesResponse list;
  for (const char* state : {"running", "running", "exited"}) {
    v1::ProcessInfo* p = list.add_processes();
    p->mutable_hello()->set_service("api");
    p->mutable_hello()->add_foreign_allocator("malloc");
    p->set_state(state);
  }
  v1::ProcessInfo* seen = list.add_processes();
  seen->mutable_hello()->set_service("web");
  seen->set_state("running");
  m.RefreshFleet(list, {});
  EXPECT_EQ(ValueOf(m, "cgoheap_agent_foreign_allocator_processes", "api"), 2);
  EXPECT_EQ(ValueOf(m, "cgoheap_agent_foreign_allocator_processes", "web"), 0);
}

// Two long C++ names that differ only past the cut stay two labels.
TEST(MetricsTest, OnlyTheTopServicesHaveSeriesTheRestAreOther) {
  ServerMetrics m;
  m.SetMaxServices(2);
  auto fleet = [](std::vector<std::pair<std::string, uint64_t>> services) {
    v1::ListProcessesResponse list;
    for (const auto& [name, live] : services) {
      v1::ProcessInfo* p = list.add_processes();
      p->mutable_hello()->set_service(name);
      p->set_state("running");
      p->set_live_bytes(live);
    }
    return list;
  };
  // A client inventing service names: 1,000 of them.
  std::vector<std::pair<std::string, uint64_t>> many = {{"payments", 5000}, {"search", 4000}};
  for (int i = 0; i < 1000; ++i) many.emplace_back("invented-" + std::to_string(i), 1);
  absl::flat_hash_map<std::string, ServiceSuspects> suspects;
  suspects["invented-7"].bytes = 64;  // growing memory ranks first
  suspects["invented-7"].stacks = 1;
  m.RefreshFleet(fleet(many), suspects);
  EXPECT_EQ(Series(m, "cgoheap_live_bytes"),
            (std::vector<std::string>{"service=invented-7,", "service=other,", "service=payments,"}));
  EXPECT_EQ(ValueOf(m, "cgoheap_live_bytes", "other"), 4000 + 999);  // search and 999 invented
  EXPECT_EQ(ValueOf(m, "cgoheap_leak_suspect_bytes", "invented-7"), 64);
  EXPECT_EQ(Series(m, "cgoheap_processes").size(), 3u * 5);  // 3 services x 5 states
  // When the fleet changes, series of services gone are removed.
  m.RefreshFleet(fleet({{"search", 10}}), {});
  EXPECT_EQ(Series(m, "cgoheap_live_bytes"), (std::vector<std::string>{"service=search,"}));
  EXPECT_EQ(Series(m, "cgoheap_leak_suspect_bytes"), (std::vector<std::string>{"service=search,"}));
}

TEST(MetricsTest, LongSiteLabelsAreShortenedAndStayUnique) {
  std::string shared(190, 'x');
  std::string a = "ns::Table<" + shared + ">::Insert(int) /src/t.cc:10";
  std::string b = "ns::Table<" + shared + ">::Insert(long) /src/t.cc:10";
  std::string la = SiteLabel(a), lb = SiteLabel(b);
  EXPECT_EQ(la.size(), 180u + 1 + 16);
  EXPECT_EQ(la.substr(0, 180), a.substr(0, 180));
  EXPECT_EQ(la[180], '~');
  EXPECT_NE(la, lb);
  EXPECT_EQ(SiteLabel(a), la);  // stable
  EXPECT_EQ(SiteLabel("kv::Table::Insert(int) /src/kv.cpp:18"), "kv::Table::Insert(int) /src/kv.cpp:18");
}

}  // namespace
}  // namespace cgoheap::server
