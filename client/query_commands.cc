// cgoheap ps, leaks, top, pprof and watch: queries against a running cgoheapd.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "cgoheap.grpc.pb.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/report.h"
#include "common/flags.h"

namespace cgoheap::client {

// Shared by the query commands: flag errors and --help.
int FlagError(const absl::Status& st, const char* command) {
  if (st.code() == absl::StatusCode::kCancelled) {
    std::cout << st.message();
    return 0;
  }
  std::cerr << command << ": " << st.message() << "\n";
  return 2;
}

void DebuginfodFlag(FlagSet& flags, bool* allowed) {
  flags.Bool("debuginfod", allowed,
             "let libdw fetch missing debug info from the servers in $DEBUGINFOD_URLS (default: "
             "no network lookups)");
}

void LostFlag(FlagSet& flags, bool* lost_only) {
  flags.Bool("lost", lost_only,
             "only leaks that nothing pointed to at exit (valgrind's \"definitely lost\"); still "
             "reachable ones are counted, not shown");
}

std::string KeepDebuginfodOff(bool allowed) {
  const char* urls = getenv("DEBUGINFOD_URLS");
  if (allowed || urls == nullptr) return "";
  std::string removed = urls;
  unsetenv("DEBUGINFOD_URLS");
  return removed;
}

std::string Unreachable(const std::string& server, const std::string& alternative) {
  return absl::StrCat("cannot reach cgoheapd at ", server,
                      ": is it running? Start one with `cgoheapd --listen=", server,
                      " --data=DIR`, or ", alternative,
                      " (a cgoheapd that serves TLS needs --tls-ca=FILE, and one that asks for "
                      "client certificates --tls-cert and --tls-key)");
}

bool Reachable(const std::shared_ptr<grpc::Channel>& channel) {
  return channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

std::string RpcError(const grpc::Status& st, const std::string& server) {
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::StrCat(Unreachable(server), " (", st.error_message(), ")");
  }
  return st.error_message();
}

namespace {

// The query stub of a connection, or nullptr after printing why not.
std::unique_ptr<v1::Query::Stub> Connect(Connection& conn, const char* command) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);  // 100,000 leaks with their stacks
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = conn.Dial(args);
  if (!channel.ok()) {
    std::cerr << command << ": " << channel.status().message() << "\n";
    return nullptr;
  }
  return v1::Query::NewStub(*channel);
}

void Prepare(const Connection& conn, grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  conn.Authorize(ctx);
}

}  // namespace

int PsCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string service;
  bool json = false;
  FlagSet flags("cgoheap ps");
  ConnectionFlags(flags, &conn);
  flags.String("service", &service, "NAME", "only processes of this service");
  flags.Bool("json", &json, "print one JSON document");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap ps");
  v1::ListProcessesRequest req;
  req.set_service(service);
  req.set_page_size(1000);
  v1::ListProcessesResponse resp;
  auto stub = Connect(conn, "cgoheap ps");
  if (stub == nullptr) return 2;
  do {  // page by page: a fleet's listing does not fit one message
    v1::ListProcessesResponse page;
    grpc::ClientContext ctx;
    Prepare(conn, &ctx);
    grpc::Status st = stub->ListProcesses(&ctx, req, &page);
    if (!st.ok()) {
      std::cerr << "cgoheap ps: " << RpcError(st, conn.server) << "\n";
      return 1;
    }
    for (auto& p : *page.mutable_processes()) resp.mutable_processes()->Add()->Swap(&p);
    req.set_page_token(page.next_page_token());
  } while (!req.page_token().empty());
  std::cout << (json ? ProcessesJson(resp) : ProcessesText(resp));
  return 0;
}

int LeaksCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string service, process;
  bool json = false, all = false, lost_only = false;
  uint64_t limit = 1000;
  FlagSet flags("cgoheap leaks");
  ConnectionFlags(flags, &conn);
  flags.Uint("limit", &limit, "N", "show the N largest leaks (default 1000; growth leaks first)", 1,
             100000);
  flags.String("service", &service, "NAME", "only processes of this service");
  flags.String("process", &process, "ID", "only this process (an id from cgoheap ps)");
  flags.Bool("all", &all,
             "include allocations of the Go runtime and the C library, and what program images "
             "held when replaced by exec");
  LostFlag(flags, &lost_only);
  flags.Bool("json", &json, "print one JSON document");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap leaks");
  v1::LeaksRequest req;
  req.set_service(service);
  req.set_process_id(process);
  req.set_all(all);
  req.set_lost_only(lost_only);
  req.set_limit(static_cast<uint32_t>(limit));
  v1::LeaksResponse resp;
  auto stub = Connect(conn, "cgoheap leaks");
  if (stub == nullptr) return 2;
  grpc::ClientContext ctx;
  Prepare(conn, &ctx);
  grpc::Status st = stub->Leaks(&ctx, req, &resp);
  if (!st.ok()) {
    std::cerr << "cgoheap leaks: " << RpcError(st, conn.server) << "\n";
    return 1;
  }
  std::cout << (json ? LeaksJson(resp) : LeaksText(resp, TextOptions{"==", all}));
  return 0;
}

int TopCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string service, by = "stack";
  uint64_t limit = 20;
  bool json = false;
  FlagSet flags("cgoheap top");
  ConnectionFlags(flags, &conn);
  flags.String("service", &service, "NAME", "only processes of this service");
  flags.String("by", &by, "stack|function|line", "group the live heap (default stack)");
  flags.Uint("limit", &limit, "N", "show the N largest (default 20)", 1, 100000);
  flags.Bool("json", &json, "print one JSON document");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap top");
  v1::TopRequest req;
  req.set_service(service);
  req.set_by(by);
  req.set_limit(static_cast<uint32_t>(std::min<uint64_t>(limit, 1000)));
  v1::TopResponse resp;
  auto stub = Connect(conn, "cgoheap top");
  if (stub == nullptr) return 2;
  grpc::ClientContext ctx;
  Prepare(conn, &ctx);
  grpc::Status st = stub->Top(&ctx, req, &resp);
  if (!st.ok()) {
    std::cerr << "cgoheap top: " << RpcError(st, conn.server) << "\n";
    return 1;
  }
  std::cout << (json ? TopJson(resp) : TopText(resp, by));
  return 0;
}

int PprofCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string service, process, output;
  bool leaks = false, all = false;
  double ago = 0;
  FlagSet flags("cgoheap pprof");
  ConnectionFlags(flags, &conn);
  flags.String("service", &service, "NAME", "only processes of this service");
  flags.String("process", &process, "ID", "only this process (an id from cgoheap ps)");
  flags.Bool("leaks", &leaks,
             "the leaks (growth and exit) instead of running processes' live C heap");
  flags.Bool("all", &all,
             "include allocations of the Go runtime and the C library, and what program images "
             "held when replaced by exec");
  flags.Duration("ago", &ago,
                 "the live heap as it was this long ago (within cgoheapd's --leak-window), for "
                 "go tool pprof -diff_base",
                 1, 168 * 3600);
  flags.String("output", &output, "FILE",
               "write the profile (gzip-compressed profile.proto) here; - for standard output");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap pprof");
  if (output.empty()) {
    std::cerr << "cgoheap pprof: say where to write the profile: --output=FILE (e.g. "
                 "--output=cheap.pb.gz), or --output=- for standard output\n";
    return 2;
  }
  if (leaks && ago != 0) {
    std::cerr << "cgoheap pprof: --ago is for the live heap; a profile of --leaks is as of now\n";
    return 2;
  }
  v1::ProfileRequest req;
  req.set_service(service);
  req.set_process_id(process);
  req.set_leaks(leaks);
  req.set_all(all);
  req.set_seconds_ago(ago);
  v1::ProfileResponse resp;
  auto stub = Connect(conn, "cgoheap pprof");
  if (stub == nullptr) return 2;
  grpc::ClientContext ctx;
  Prepare(conn, &ctx);
  grpc::Status st = stub->Profile(&ctx, req, &resp);
  if (!st.ok()) {
    std::cerr << "cgoheap pprof: " << RpcError(st, conn.server) << "\n";
    return 1;
  }
  std::string what = absl::StrCat(resp.samples(), resp.samples() == 1 ? " stack" : " stacks",
                                  " from ", resp.processes(),
                                  resp.processes() == 1 ? " process" : " processes");
  if (output == "-") {
    std::cout.write(resp.profile().data(), static_cast<std::streamsize>(resp.profile().size()));
    std::cout.flush();
    std::cerr << "cgoheap pprof: " << what << "\n";
    return std::cout ? 0 : 1;
  }
  std::ofstream out(output, std::ios::binary | std::ios::trunc);
  out.write(resp.profile().data(), static_cast<std::streamsize>(resp.profile().size()));
  out.close();
  if (!out) {
    std::cerr << "cgoheap pprof: cannot write " << output << ": " << strerror(errno) << "\n";
    return 1;
  }
  std::cout << "wrote " << output << ": " << what << "; open it with `go tool pprof -top "
            << output << "` (or -http=:8080 for the flame graph)\n";
  return 0;
}

int WatchCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string service;
  bool json = false;
  FlagSet flags("cgoheap watch");
  ConnectionFlags(flags, &conn);
  flags.String("service", &service, "NAME", "only findings of this service");
  flags.Bool("json", &json, "one JSON object per line");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap watch");
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = conn.Dial();
  if (!channel.ok()) {
    std::cerr << "cgoheap watch: " << channel.status().message() << "\n";
    return 2;
  }
  if (!Reachable(*channel)) {
    std::cerr << "cgoheap watch: " << Unreachable(conn.server) << "\n";
    return 1;
  }
  v1::WatchRequest req;
  req.set_service(service);
  grpc::ClientContext ctx;
  conn.Authorize(&ctx);
  auto reader = v1::Query::NewStub(*channel)->Watch(&ctx, req);
  v1::Leak leak;
  while (reader->Read(&leak)) {
    std::cout << (json ? LeakJson(leak) + "\n" : WatchLine(leak)) << std::flush;
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) {
    std::cerr << "cgoheap watch: " << RpcError(st, conn.server) << "\n";
    return 1;
  }
  return 0;
}

}  // namespace cgoheap::client
