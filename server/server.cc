#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <google/protobuf/stubs/common.h>
#include <rocksdb/env.h>
#include <rocksdb/version.h>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "server/http/endpoints.h"
#include "server/http/http_server.h"
#include "server/ingest/heap_state.h"
#include "server/ingest/ingest_service.h"
#include "server/metrics/metrics.h"
#include "server/query/query_service.h"
#include "server/query/reports.h"
#include "server/storage/store.h"

namespace cgoheap::server {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("--data=DIR is required: where RocksDB keeps its files");
  }
  std::unique_ptr<Server> s(new Server);
  auto auth = TokenAuth::Load(options.auth);
  if (!auth.ok()) return auth.status();
  s->auth_ = std::move(*auth);
  StoreOptions store_opts{.sync = options.sync};
  if (options.in_memory) {
    s->memory_env_.reset(rocksdb::NewMemEnv(rocksdb::Env::Default()));
    store_opts.env = s->memory_env_.get();
  }
  auto store = Store::Open(options.data_dir, store_opts);
  if (!store.ok()) return store.status();
  s->store_ = std::move(*store);
  s->metrics_ = std::make_unique<ServerMetrics>();
  s->metrics_->SetBuildInfo(ProjectVersion(), GitCommit(), ServerLibraries());
  s->auth_->SetMetrics(s->metrics_.get());
  s->metrics_->SetMaxServices(options.metrics_max_services);
  HeapState::Options state_opts;
  state_opts.leak_window_seconds = options.leak_window_seconds;
  state_opts.retention_seconds = options.retention_seconds;
  state_opts.lost_after_seconds = options.lost_after_seconds;
  state_opts.max_processes = options.max_processes;
  state_opts.max_stacks = options.max_stacks;
  state_opts.max_live_blocks = options.max_live_blocks;
  state_opts.max_process_live_blocks = options.max_process_live_blocks;
  state_opts.max_process_stacks = options.max_process_stacks;
  s->state_ = std::make_unique<HeapState>(s->store_.get(), s->metrics_.get(), state_opts);
  absl::Status st = s->state_->Load();
  if (!st.ok()) return st;
  s->ingest_ = std::make_unique<IngestService>(s->state_.get(), s->metrics_.get(), s->auth_.get());
  s->query_ = std::make_unique<QueryService>(s->state_.get(), s->metrics_.get(), s->auth_.get(),
                                             options.max_watchers);
  if (!options.metrics.empty()) {
    // /metrics and the pprof profiles, read like the query API: over TLS
    // with the gRPC port's certificate (and client CA), with a query token
    // when there are query tokens.
    s->http_ = std::make_unique<HttpServer>();
    AddEndpoints(*s->http_, s->state_.get(), s->metrics_.get(), s->auth_.get());
    absl::Status st = s->http_->Start({.address = options.metrics,
                                       .tls_cert_file = options.auth.tls_cert_file,
                                       .tls_key_file = options.auth.tls_key_file,
                                       .tls_client_ca_file = options.auth.tls_client_ca_file});
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat(st.message(),
                                                  " (is the port in use? choose another with "
                                                  "--metrics=HOST:PORT)"));
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  // Links the health protocol's descriptor in (proto/grpc/health/v1/), so
  // that reflection can describe the service the default one serves.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen,
                           s->auth_->Credentials(s->auth_, IsLoopbackAddress(options.listen)), &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // gRPC sets SO_REUSEPORT by default: a second cgoheapd on the same port
  // would silently share it and split the agents' streams between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(s->ingest_.get());
  builder.RegisterService(s->query_.get());
  s->grpc_ = builder.BuildAndStart();
  if (s->grpc_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        ": the address is in use or not local (choose another with --listen=HOST:PORT)"));
  }
  std::string host = options.listen.substr(0, options.listen.rfind(':'));
  s->address_ = absl::StrCat(host, ":", port);
  s->refresher_ = std::thread([srv = s.get(), window = options.leak_window_seconds,
                               top_k = static_cast<int>(std::min<uint64_t>(options.metrics_top_k, 1000))] {
    srv->RefreshLoop(window, top_k);
  });
  return s;
}

std::string Server::metrics_address() const { return http_ != nullptr ? http_->address() : ""; }

LibraryVersions ServerLibraries() {
  return {{"gRPC", grpc::Version()},
          {"protobuf", google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION)},
          {"RocksDB", absl::StrCat(ROCKSDB_MAJOR, ".", ROCKSDB_MINOR, ".", ROCKSDB_PATCH)},
          {"prometheus-cpp", CGOHEAP_PROMETHEUS_CPP_VERSION},
          {"abseil", absl::StrCat(ABSL_LTS_RELEASE_VERSION)}};
}

// Growth detection samples every window/16 (at least every 2 s); metrics
// follow at the same pace.
void Server::RefreshLoop(double window_seconds, int metrics_top_k) {
  absl::Duration tick = std::min(absl::Seconds(2), absl::Seconds(window_seconds / 16));
  absl::Time last_expiry;
  do {
    // Retention: every 10 s at most (each pass scans the processes).
    if (absl::Now() - last_expiry >= absl::Seconds(10)) {
      last_expiry = absl::Now();
      absl::StatusOr<size_t> forgotten = state_->Expire(absl::ToUnixNanos(last_expiry));
      if (!forgotten.ok()) metrics_->OnStorageError();
    }
    state_->DetectGrowth(absl::ToUnixNanos(absl::Now()));
    metrics_->RefreshFleet(state_->ListProcesses({}), Suspects(*state_, metrics_top_k));
    metrics_->SetStorageBytes(static_cast<double>(store_->DiskBytes()));
  } while (!stop_.WaitForNotificationWithTimeout(tick));
}

void Server::Wait() {
  if (grpc_ != nullptr) grpc_->Wait();
}

void Server::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    stop_.Notify();
    if (grpc_ != nullptr) {
      grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    }
    if (refresher_.joinable()) refresher_.join();
    if (http_ != nullptr) http_->Stop();
  });
}

Server::~Server() {
  Shutdown();
  http_.reset();
  grpc_.reset();
  query_.reset();
  ingest_.reset();
  state_.reset();
  store_.reset();
}

}  // namespace cgoheap::server
