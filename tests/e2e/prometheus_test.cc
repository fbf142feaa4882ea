// A real Prometheus (Debian's package) scrapes cgoheapd while a service leaks;
// the leak alert of deploy/prometheus/cgoheap_rules.yml fires, as seen through
// Prometheus' own HTTP API. The rules' "for:" durations are shortened to
// seconds; everything else is the shipped file.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(PrometheusTest, LeakAlertFiresThroughPrometheus) {
  TempDir dir;
  // Scraped as deploy/prometheus/prometheus.yml says: basic auth with a
  // query token as the password.
  std::ofstream(dir.path() + "/query.token") << "prometheus-0123456789abcdef0123\n";
  Cgoheapd d(dir.path() + "/data", {"--leak-window=4s", "--metrics=127.0.0.1:0",
                                    "--query-token-file=" + dir.path() + "/query.token"});
  ASSERT_FALSE(d.metrics_address().empty());
  RunResult unauthorized = RunProcess(
      {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://" + d.metrics_address() + "/metrics"});
  EXPECT_EQ(unauthorized.out, "401") << "a scrape without the token is refused";

  std::string rules = ReadFile(std::string(CGOHEAP_SOURCE_DIR) + "/deploy/prometheus/cgoheap_rules.yml");
  rules = std::regex_replace(rules, std::regex("for: [0-9]+m"), "for: 1s");
  std::ofstream(dir.path() + "/rules.yml") << rules;
  std::ofstream(dir.path() + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "rule_files:\n  - " << dir.path() << "/rules.yml\n"
      << "scrape_configs:\n  - job_name: cgoheapd\n"
      << "    basic_auth:\n      username: prometheus\n      password_file: " << dir.path()
      << "/query.token\n    static_configs:\n"
      << "      - targets: [\"" << d.metrics_address() << "\"]\n";
  std::string web = "127.0.0.1:" + std::to_string(FreePort());
  pid_t prom = SpawnBackground({"prometheus", "--config.file=" + dir.path() + "/prometheus.yml",
                           "--storage.tsdb.path=" + dir.path() + "/tsdb",
                           "--web.listen-address=" + web});
  pid_t service = SpawnBackground({BinDir() + "/cgoheap", "run", "--server=" + d.address(),
                              "--service=slow", "--", Program("slowleak"), "90"});
  std::string alerts;
  bool firing = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!firing && std::chrono::steady_clock::now() < deadline) {
    usleep(500'000);
    alerts = RunProcess({"curl", "-sf", "http://" + web + "/api/v1/alerts"}).out;
    if (alerts.empty()) continue;  // Prometheus still starting
    google::protobuf::Value v = ParseJson(alerts);
    for (const auto& a : v.struct_value().fields().at("data").struct_value().fields().at("alerts")
                              .list_value().values()) {
      const auto& f = a.struct_value().fields();
      const auto& labels = f.at("labels").struct_value().fields();
      firing |= labels.at("alertname").string_value() == "CgoheapServiceLeaking" &&
                labels.at("service").string_value() == "slow" &&
                f.at("state").string_value() == "firing";
    }
  }
  StopGroup(service, SIGINT);
  StopGroup(prom, SIGTERM);
  EXPECT_TRUE(firing) << alerts;
  EXPECT_NE(alerts.find("cgoheap leaks --service=slow"), std::string::npos) << alerts;
}

}  // namespace
}  // namespace cgoheap::testing
