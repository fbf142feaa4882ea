// cgoheap forward: the forwarder on its own, for processes started with the
// agent preloaded outside `cgoheap run` (a service under systemd, a pod with
// a sidecar). It drains every ring that appears in --ring-dir, streams each
// process to cgoheapd, and ends each one when it exits. SIGTERM/SIGINT: flush,
// wait for the acknowledgements, exit.
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <iostream>

#include <grpcpp/grpcpp.h>

#include "client/commands.h"
#include "client/connection.h"
#include "client/forwarder.h"

namespace cgoheap::client {
namespace {

std::atomic<bool> g_stop{false};
void OnStop(int) { g_stop.store(true); }

}  // namespace

int ForwardCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string ring_dir, service;
  double ack_timeout = 60, heartbeat = 10;
  bool debuginfod = false;
  FlagSet flags("cgoheap forward");
  flags.String("ring-dir", &ring_dir, "DIR", "where agents create their rings ($CGOHEAP_RING_DIR of the processes)");
  ConnectionFlags(flags, &conn);
  flags.String("service", &service, "NAME", "service name for processes that set no CGOHEAP_SERVICE");
  flags.Duration("heartbeat", &heartbeat,
                 "a process with nothing to send tells the server it is alive this often "
                 "(default 10s; keep it well under cgoheapd's --lost-after)",
                 0.05, 3600);
  flags.Duration("ack-timeout", &ack_timeout, "on exit, how long to wait for acknowledgements (default 60s)", 0.01, 24 * 3600);
  DebuginfodFlag(flags, &debuginfod);
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap forward");
  KeepDebuginfodOff(debuginfod);
  if (ring_dir.empty()) {
    std::cerr << "cgoheap forward: --ring-dir=DIR is required: the CGOHEAP_RING_DIR the agents use\n";
    return 2;
  }
  struct stat st;
  if (stat(ring_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::cerr << "cgoheap forward: " << ring_dir << " is not a directory: create it (agents "
              << "write their rings there) or pass another --ring-dir\n";
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> dialed = conn.Dial();
  if (!dialed.ok()) {
    std::cerr << "cgoheap forward: " << dialed.status().message() << "\n";
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel = *dialed;
  const std::string& server = conn.server;
  if (!Reachable(channel)) {
    // Not fatal: events wait in the rings and in memory until it comes back.
    std::cerr << "cgoheap forward: " << Unreachable(server)
              << ". Forwarding anyway: everything is resent once it answers\n";
  }
  signal(SIGTERM, OnStop);
  signal(SIGINT, OnStop);
  ForwarderOptions opts;
  opts.ring_dir = ring_dir;
  opts.service = service;
  opts.channel = channel;
  opts.heartbeat = absl::Seconds(heartbeat);
  opts.authorization = conn.authorization();
  opts.remember_processes = false;
  opts.resumable = true;  // a restarted forwarder resumes every process exactly
  Forwarder fwd(opts);
  std::cerr << "cgoheap forward: forwarding rings in " << ring_dir << " to " << server << "\n";
  PollPacer pacer;
  while (!g_stop.load()) {
    usleep(pacer.Next(fwd.Poll()) * 1000);
  }
  absl::Status done = fwd.Finish(absl::Seconds(ack_timeout));
  if (!done.ok()) {
    std::cerr << "cgoheap forward: " << done.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace cgoheap::client
