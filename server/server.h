// cgoheapd assembled: storage, state, gRPC services (ingest, query, health,
// reflection) and metrics. Used by cgoheapd's main and embedded by
// `cgoheap run` when no --server is given.
//
//   ServerOptions opts{.listen = "127.0.0.1:0", .data_dir = dir};
//   auto server = Server::Start(opts);
//   if (!server.ok()) ...;
//   std::string addr = (*server)->address();   // "127.0.0.1:40123"
//   (*server)->Wait();                          // or Shutdown()
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/limits.h"
#include "common/version.h"
#include "server/auth/auth.h"

namespace grpc {
class Server;
}
namespace rocksdb {
class Env;
}

namespace cgoheap::server {

class Store;
class HeapState;
class ServerMetrics;
class IngestService;
class QueryService;
class HttpServer;

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";
  AuthOptions auth;  // TLS and tokens (server/auth/auth.h); none: plaintext, open
  std::string data_dir;
  // RocksDB on an in-memory file system instead (data_dir is then only a
  // name): for data that ends with the process, like one `cgoheap run`'s.
  // Opening it costs about a millisecond instead of 25-50 (a new database
  // on disk syncs its manifest and directory).
  bool in_memory = false;
  std::string metrics;          // HTTP port: /metrics and /debug/pprof/ (empty: none)
  // Sync the WAL before acknowledging a write: acknowledged then means
  // durable across a power loss. Concurrent streams share each sync
  // (RocksDB's write groups: one WAL write and one sync for all the writes
  // waiting), so it costs latency more than throughput.
  bool sync = true;
  double leak_window_seconds = 600;  // growth leaks: live memory rising through this window
  uint64_t metrics_top_k = 10;       // growing stacks per service with a series of their own
  int max_message_bytes = static_cast<int>(kMaxMessageBytes);  // common/limits.h
  // Bounds (HeapState::Options has what each costs).
  uint64_t max_processes = 100'000;
  uint64_t max_stacks = 1'000'000;
  uint64_t max_live_blocks = 50'000'000;
  uint64_t max_process_live_blocks = 10'000'000;
  uint64_t max_process_stacks = 200'000;
  uint64_t max_watchers = 256;
  uint64_t metrics_max_services = 100;
  double retention_seconds = 30 * 24 * 3600;  // ended processes are forgotten after this
  double lost_after_seconds = 300;  // a running process not heard from this long is "lost"  // services with series of their own; the rest: "other"
};

// Thread-safe.
class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  const std::string& address() const { return address_; }
  std::string metrics_address() const;
  void Wait();
  void Shutdown();

 private:
  Server() = default;
  // metrics_top_k: growing stacks per service with a series of their own.
  void RefreshLoop(double window_seconds, int metrics_top_k);

  std::string address_;
  std::unique_ptr<rocksdb::Env> memory_env_;  // in_memory: outlives store_
  std::unique_ptr<Store> store_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::shared_ptr<TokenAuth> auth_;
  std::unique_ptr<HeapState> state_;
  std::unique_ptr<IngestService> ingest_;
  std::unique_ptr<QueryService> query_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<HttpServer> http_;  // --metrics: /metrics and /debug/pprof/
  absl::Notification stop_;
  std::once_flag shutdown_once_;
  std::thread refresher_;
};

// The libraries cgoheapd is built with, and their versions (--version, and
// the labels of cgoheap_build_info).
LibraryVersions ServerLibraries();

}  // namespace cgoheap::server
