// The cgoheap subcommands. Each returns the process exit code.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/flags.h"

#include "absl/status/statusor.h"
#include "server/server.h"

namespace grpc {
class Channel;
class Status;
}

namespace cgoheap::client {

int RunCommand(const std::vector<std::string>& args);
int PsCommand(const std::vector<std::string>& args);
int LeaksCommand(const std::vector<std::string>& args);
int BenchCommand(const std::vector<std::string>& args);
int TopCommand(const std::vector<std::string>& args);
int WatchCommand(const std::vector<std::string>& args);
int PprofCommand(const std::vector<std::string>& args);
int BenchPprofCommand(const std::vector<std::string>& args);
int BenchSymbolsCommand(const std::vector<std::string>& args);
int ForwardCommand(const std::vector<std::string>& args);

// Shared by the commands.
int FlagError(const absl::Status& st, const char* command);
// A message for a failed RPC that says what to do.
std::string RpcError(const grpc::Status& st, const std::string& server);
// "cannot reach cgoheapd at ADDR: is it running? Start one with ..., or <alternative>"
std::string Unreachable(const std::string& server,
                        const std::string& alternative = "pass --server=HOST:PORT");
// True once the channel connects, false after 5 s.
bool Reachable(const std::shared_ptr<grpc::Channel>& channel);
// --debuginfod: whether libdw may fetch missing debug info over the network.
void DebuginfodFlag(FlagSet& flags, bool* allowed);
// --lost: only leaks something was lost of at exit (LeaksRequest.lost_only).
void LostFlag(FlagSet& flags, bool* lost_only);
// Unless allowed, removes DEBUGINFOD_URLS from this process's environment
// (libdw reads it at each lookup), so symbolizing never contacts a
// debuginfod server; returns the value removed ("" if none), for a child
// that should still see it. Call before any thread starts.
std::string KeepDebuginfodOff(bool allowed);
// A cgoheapd inside this process on 127.0.0.1:<free port>, RocksDB in data_dir
// (empty: in memory, gone when it stops).
absl::StatusOr<std::unique_ptr<server::Server>> StartLocalServer(const std::string& data_dir);

}  // namespace cgoheap::client
