// cgoheap: the command-line tool. Dispatches to a subcommand.
#include <malloc.h>

#include <iostream>
#include <string>
#include <vector>

#include <elfutils/libdwfl.h>
#include <google/protobuf/stubs/common.h>
#include <grpcpp/grpcpp.h>
#include <libunwind.h>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "common/version.h"

namespace {

constexpr char kUsage[] = R"(cgoheap: find C memory leaks in Go programs that use cgo.

  cgoheap run [flags] -- PROGRAM [ARGS...]   run PROGRAM under the agent; print its leaks
  cgoheap ps [--server=ADDR] [--json]        list the processes a cgoheapd knows
  cgoheap leaks [--server=ADDR] [--service=NAME] [--process=ID] [--all] [--json]
                                             show leaks, grouped by stack across processes
  cgoheap top [--server=ADDR] [--service=NAME] [--by=stack|function|line] [--json]
                                             live C heap of running processes, largest first
  cgoheap pprof [--server=ADDR] [--service=NAME | --process=ID] [--leaks] [--ago=DURATION]
                --output=FILE                live heap or leaks as a profile for go tool pprof
  cgoheap watch [--server=ADDR] [--service=NAME] [--json]
                                             print each new leak finding as it is made
  cgoheap forward --ring-dir=DIR [--server=ADDR]
                                             forward processes preloaded with the agent
                                             (CGOHEAP_RING_DIR=DIR) outside cgoheap run
  cgoheap bench ingest [--server=ADDR] [--processes=N] [--seconds=S]
                                             load a cgoheapd; print events/s and ack latency
  cgoheap bench pprof [--server=ADDR] [--blocks=N] [--stacks=K] [--output=FILE]
                                             time a profile of a large live heap
  cgoheap bench symbols [--addresses=N] [FILE...]
                                             time naming C frames: the index against libdw

Run `cgoheap COMMAND --help` for a command's flags; `cgoheap --version` says
which build this is.
)";

// The libraries cgoheap (and the agent it starts) are built with.
cgoheap::LibraryVersions ClientLibraries() {
  return {{"gRPC", grpc::Version()},
          {"protobuf", google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION)},
          {"elfutils", dwfl_version(nullptr)},
          {"libunwind", absl::StrCat(UNW_VERSION_MAJOR, ".", UNW_VERSION_MINOR, ".",
                                     UNW_VERSION_EXTRA)},
          {"abseil", absl::StrCat(ABSL_LTS_RELEASE_VERSION)}};
}

}  // namespace

int main(int argc, char** argv) {
  // The forwarder builds and frees a batch of a few hundred KiB every few
  // milliseconds: keep that memory in the heap instead of mapping and
  // unmapping (and page-faulting) it each time.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::cout << cgoheap::VersionText("cgoheap", ClientLibraries());
    return 0;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "run") return cgoheap::client::RunCommand(args);
  if (cmd == "ps") return cgoheap::client::PsCommand(args);
  if (cmd == "leaks") return cgoheap::client::LeaksCommand(args);
  if (cmd == "bench") return cgoheap::client::BenchCommand(args);
  if (cmd == "top") return cgoheap::client::TopCommand(args);
  if (cmd == "pprof") return cgoheap::client::PprofCommand(args);
  if (cmd == "watch") return cgoheap::client::WatchCommand(args);
  if (cmd == "forward") return cgoheap::client::ForwardCommand(args);
  std::cerr << "cgoheap: unknown command '" << cmd << "'\n\n" << kUsage;
  return 2;
}
