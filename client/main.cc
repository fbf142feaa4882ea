// cgoheap: the command-line tool. Dispatches to a subcommand.
#include <malloc.h>

#include <iostream>
#include <string>
#include <vector>

#include "client/commands.h"

namespace {

constexpr char kUsage[] = R"(cgoheap: find C memory leaks in Go programs that use cgo.

  cgoheap run [flags] -- PROGRAM [ARGS...]   run PROGRAM under the agent; print its leaks
  cgoheap ps [--server=ADDR] [--json]        list the processes a cgoheapd knows
  cgoheap leaks [--server=ADDR] [--service=NAME] [--process=ID] [--all] [--json]
                                             show leaks, grouped by stack across processes
  cgoheap top [--server=ADDR] [--service=NAME] [--by=stack|function|line] [--json]
                                             live C heap of running processes, largest first
  cgoheap watch [--server=ADDR] [--service=NAME] [--json]
                                             print each new leak finding as it is made
  cgoheap forward --ring-dir=DIR [--server=ADDR]
                                             forward processes preloaded with the agent
                                             (CGOHEAP_RING_DIR=DIR) outside cgoheap run
  cgoheap bench ingest [--server=ADDR] [--processes=N] [--seconds=S]
                                             load a cgoheapd; print events/s and ack latency

Run `cgoheap COMMAND --help` for a command's flags.
)";

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
  std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "run") return cgoheap::client::RunCommand(args);
  if (cmd == "ps") return cgoheap::client::PsCommand(args);
  if (cmd == "leaks") return cgoheap::client::LeaksCommand(args);
  if (cmd == "bench") return cgoheap::client::BenchCommand(args);
  if (cmd == "top") return cgoheap::client::TopCommand(args);
  if (cmd == "watch") return cgoheap::client::WatchCommand(args);
  if (cmd == "forward") return cgoheap::client::ForwardCommand(args);
  std::cerr << "cgoheap: unknown command '" << cmd << "'\n\n" << kUsage;
  return 2;
}
