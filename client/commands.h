// The cgoheap subcommands. Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/flags.h"

namespace grpc {
class Status;
}

namespace cgoheap::client {

int RunCommand(const std::vector<std::string>& args);
int PsCommand(const std::vector<std::string>& args);
int LeaksCommand(const std::vector<std::string>& args);
int BenchCommand(const std::vector<std::string>& args);
int TopCommand(const std::vector<std::string>& args);
int WatchCommand(const std::vector<std::string>& args);
int ForwardCommand(const std::vector<std::string>& args);

// Shared by the commands.
int FlagError(const absl::Status& st, const char* command);
std::string DefaultServer();
// A message for a failed RPC that says what to do.
std::string RpcError(const grpc::Status& st, const std::string& server);

}  // namespace cgoheap::client
