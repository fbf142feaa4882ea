// cgoheapd: parses flags and runs the server.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "common/flags.h"
#include "server/server.h"


int main(int argc, char** argv) {
  cgoheap::server::ServerOptions opts;
  cgoheap::FlagSet flags("cgoheapd");
  flags.String("listen", &opts.listen, "HOST:PORT", "gRPC address (default 127.0.0.1:7070; port 0 picks one)");
  flags.String("data", &opts.data_dir, "DIR", "RocksDB directory (required)");
  flags.String("metrics", &opts.metrics, "HOST:PORT", "serve Prometheus /metrics here");
  flags.Bool("fsync", &opts.sync,
             "sync the WAL to disk before acknowledging (default true: acknowledged is durable "
             "across a power loss; --fsync=false trades that for speed)");
  flags.Duration("leak-window", &opts.leak_window_seconds,
                 "a stack whose live memory rises through this window is a growth leak (default 10m)",
                 1, 7 * 24 * 3600);
  flags.Uint("metrics-top-k", &opts.metrics_top_k, "K",
             "growing stacks per service exported as series of their own (default 10)", 0, 1000);
  bool version = false;
  flags.Bool("version", &version, "print the version, commit and libraries, and exit");
  std::vector<std::string> args(argv + 1, argv + argc);
  auto rest = flags.Parse(args);
  if (!rest.ok()) {
    bool help = rest.status().code() == absl::StatusCode::kCancelled;
    std::cerr << (help ? "" : "cgoheapd: ") << rest.status().message() << "\n";
    if (!help) std::cerr << flags.Usage();
    return help ? 0 : 2;
  }
  if (version) {
    std::cout << cgoheap::VersionText("cgoheapd", cgoheap::server::ServerLibraries());
    return 0;
  }
  // SIGINT/SIGTERM are taken by a thread with sigwait, not a handler:
  // shutting down takes locks. Blocked before any gRPC thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  auto server = cgoheap::server::Server::Start(opts);
  if (!server.ok()) {
    std::cerr << "cgoheapd: " << server.status().message() << "\n";
    return 1;
  }
  cgoheap::server::Server* srv = server->get();
  std::thread([srv, stop_signals] {
    int sig;
    sigwait(&stop_signals, &sig);
    srv->Shutdown();
  }).detach();
  std::cout << "cgoheapd: listening on " << (*server)->address();
  if (!opts.metrics.empty()) std::cout << ", metrics on " << (*server)->metrics_address() << "/metrics";
  std::cout << ", data in " << opts.data_dir << std::endl;
  (*server)->Wait();
  (*server)->Shutdown();
  return 0;
}
