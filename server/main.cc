// cgoheapd: parses flags and runs the server.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "server/server.h"



int main(int argc, char** argv) {
  cgoheap::server::ServerOptions opts;
  cgoheap::FlagSet flags("cgoheapd");
  flags.String("listen", &opts.listen, "HOST:PORT", "gRPC address (default 127.0.0.1:7070; port 0 picks one)");
  flags.String("data", &opts.data_dir, "DIR", "RocksDB directory (required)");
  flags.String("metrics", &opts.metrics, "HOST:PORT",
               "serve Prometheus /metrics and pprof profiles (/debug/pprof/heap, "
               "/debug/pprof/leaks) here, over TLS with --tls-cert");
  flags.Bool("fsync", &opts.sync,
             "sync the WAL to disk before acknowledging (default true: acknowledged is durable "
             "across a power loss; --fsync=false trades that for speed)");
  flags.Duration("leak-window", &opts.leak_window_seconds,
                 "a stack whose live memory rises through this window is a growth leak (default 10m)",
                 1, 7 * 24 * 3600);
  flags.Uint("metrics-top-k", &opts.metrics_top_k, "K",
             "growing stacks per service exported as series of their own (default 10)", 0, 1000);
  flags.String("tls-cert", &opts.auth.tls_cert_file, "FILE",
               "serve gRPC over TLS with this certificate chain (PEM); needs --tls-key");
  flags.String("tls-key", &opts.auth.tls_key_file, "FILE", "the certificate's private key (PEM)");
  flags.String("tls-client-ca", &opts.auth.tls_client_ca_file, "FILE",
               "mutual TLS: clients must present a certificate signed by this CA (PEM)");
  flags.String("ingest-token-file", &opts.auth.ingest_token_file, "FILE",
               "tokens that may stream events, one per line (forwarders); none: anyone may");
  flags.String("query-token-file", &opts.auth.query_token_file, "FILE",
               "tokens that may read (ps, leaks, top, watch, reflection), one per line; none: "
               "anyone may");
  flags.Uint("max-processes", &opts.max_processes, "N",
             "processes held, running or ended (default 100000); more are refused", 1,
             100'000'000);
  flags.Uint("max-stacks", &opts.max_stacks, "N", "distinct stacks held (default 1000000)", 1,
             1'000'000'000);
  flags.Uint("max-live-blocks", &opts.max_live_blocks, "N",
             "live blocks of all running processes together, about 50 bytes of memory each "
             "(default 50000000)",
             1, 10'000'000'000);
  flags.Uint("max-process-live-blocks", &opts.max_process_live_blocks, "N",
             "live blocks of one process (default 10000000)", 1, 10'000'000'000);
  flags.Uint("max-process-stacks", &opts.max_process_stacks, "N",
             "stacks one process may define (default 200000)", 1, 1'000'000'000);
  flags.Uint("max-watchers", &opts.max_watchers, "N",
             "`cgoheap watch` streams open at once (default 256)", 1, 100'000);
  flags.Uint("metrics-max-services", &opts.metrics_max_services, "N",
             "services with metric series of their own (default 100); the others are summed "
             "under service=\"other\"",
             1, 100'000);
  flags.Duration("retention", &opts.retention_seconds,
                 "ended processes, their leaks and the stacks nothing else uses are forgotten "
                 "this long after the end (default 720h)",
                 1, 100 * 365 * 24 * 3600.0);
  flags.Duration("lost-after", &opts.lost_after_seconds,
                 "a running process whose stream is silent this long is lost: its forwarder is "
                 "gone, and its heap stops counting as live (default 5m; forwarders send a "
                 "heartbeat every 10s)",
                 1, 7 * 24 * 3600);
  bool insecure = false;
  flags.Bool("insecure-listen",
             &insecure,
             "serve an address other than loopback (--listen, --metrics) without TLS or without "
             "tokens (anyone who reaches it can read command lines and send data)");
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
  // Beyond loopback, each port serves only guarded (TLS and the tokens of the
  // roles it serves), or with --insecure-listen and a warning on each start.
  struct Port {
    const char* flag;
    const std::string& address;
    bool guarded;
    const char* missing;  // what is not guarded, when TLS is there
    const char* exposes;  // what anyone reaching it could do
    const char* give;     // the flags that guard it
  };
  const bool tls = !opts.auth.tls_cert_file.empty();
  const bool ingest = !opts.auth.ingest_token_file.empty(), query = !opts.auth.query_token_file.empty();
  const Port ports[] = {
      {"--listen", opts.listen, tls && ingest && query, "tokens for every role",
       "read every process's command line, executables and leaks, and send data",
       "--tls-cert, --tls-key, --ingest-token-file and --query-token-file (deploy/ shows how)"},
      {"--metrics", opts.metrics, tls && query, "query tokens",
       "read the profiles and metrics it serves", "--tls-cert, --tls-key and --query-token-file"}};
  for (const Port& p : ports) {
    if (p.address.empty() || cgoheap::server::IsLoopbackAddress(p.address) || p.guarded) continue;
    if (!insecure) {
      std::cerr << "cgoheapd: " << p.flag << "=" << p.address
                << " is reachable from other machines, and without TLS and tokens anyone there "
                   "could "
                << p.exposes << ". Give " << p.give
                << ", serve it on 127.0.0.1, or pass --insecure-listen to do it anyway.\n";
      return 2;
    }
    std::cerr << "cgoheapd: WARNING: serving " << p.address << " without "
              << (tls ? p.missing : "TLS") << " (--insecure-listen): anyone who reaches it can "
              << p.exposes << "\n";
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
  std::string guard = opts.auth.tls_cert_file.empty() ? "plaintext" : "TLS";
  if (!opts.auth.tls_client_ca_file.empty()) guard += " with client certificates";
  guard += opts.auth.ingest_token_file.empty() && opts.auth.query_token_file.empty()
               ? ", no tokens"
               : absl::StrCat(", tokens for ",
                              opts.auth.ingest_token_file.empty() ? "" : "ingest",
                              !opts.auth.ingest_token_file.empty() && !opts.auth.query_token_file.empty()
                                  ? " and "
                                  : "",
                              opts.auth.query_token_file.empty() ? "" : "query");
  std::cout << "cgoheapd: listening on " << (*server)->address() << " (" << guard << ")";
  if (!opts.metrics.empty()) {
    std::cout << ", metrics and profiles on " << (opts.auth.tls_cert_file.empty() ? "http" : "https")
              << "://" << (*server)->metrics_address() << "/";
  }
  std::cout << ", data in " << opts.data_dir << std::endl;
  (*server)->Wait();
  (*server)->Shutdown();
  return 0;
}
