// Which of a process's live C blocks its memory still points to, as it exits:
// the "still reachable" of valgrind and LeakSanitizer, told apart from what
// nothing points to any more ("definitely lost").
//
// cgoheap run stops its program at the point of exit (ptrace's
// PTRACE_EVENT_EXIT: every other thread is dying, the memory is whole) and
// scans it from outside, through process_vm_readv, as LeakSanitizer scans:
//   roots:  - the executable's and every library's data and bss (C and Go
//             globals, cgo's C globals among them; cgoheap's agent and ring
//             are left out);
//           - thread-local storage: the main thread's, with the loader's
//             data beside it, and each other thread's static TLS and
//             descriptor (pthread keys' values) at the top of its stack,
//             but for the argument its function was started with (often
//             freed at once, its chunk soon another block); only threads
//             not yet gone (glibc's lists of stacks in use), not those
//             whose stacks glibc keeps cached after they ended;
//           - the main thread's stack from its stack pointer up, when it
//             ended the process itself or was running (a C program's
//             main() called exit with its locals there); not when another
//             thread ended it while the main thread waited in a system
//             call (a Go program's main thread parked in the scheduler:
//             its frames hold stale words of earlier cgo calls);
//           - blocks of glibc's main arena that the agent never saw
//             (allocated before it started: the loader's, and library
//             constructors' that ran before the agent's, as GLib's type
//             tables or C++ static initializers).
//   not:    the other threads' stack frames (the threads are dead or dying;
//             below where they stopped lie stale copies of every pointer a
//             function returned, which would make the newest leaks look
//             reachable); Go's heap and goroutine stacks (a Go variable that
//             held a C pointer may be garbage not yet collected: a leak
//             through Go code would look reachable); glibc's free chunks,
//             and its main arena's pointers to chunks (top, bins, and
//             last_remainder, which may point into any block); other
//             anonymous memory.
//   blocks: a block is reachable when a root, or a reachable block, holds an
//           aligned 8-byte word that points into it (its start or inside:
//           C code keeps pointers to members, as LeakSanitizer assumes).
//           A lost block that another lost block points to is "indirectly
//           lost" (valgrind's word): freeing what points to it would have
//           freed it, so the leak to fix is elsewhere.
// The scan decides how a leak is shown, never whether: every block never
// freed is reported; those still reachable are marked so and sorted after
// the lost ones. Its errors lean to "lost": a C pointer kept only in a live
// Go object, or on a live thread's stack, is not seen.
//
//   std::vector<LiveBlock> blocks = ...;  // any order
//   ExitScanResult r = ScanReachable(pid, blocks, {.skip_files = {ring_dir, agent}});
//   if (r.done) ... r.reachable[i] for blocks[i] ...
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cgoheap::client {

struct LiveBlock {
  uint64_t address;
  uint64_t size;
  // Allocation order (0: unknown). Of a group of lost blocks that point to
  // one another (a document and its nodes, each pointing back), the one
  // allocated first is told "definitely lost" and the rest "indirectly":
  // an owner is allocated before its parts. Ties go by address.
  uint64_t seq = 0;
};

struct ExitScanOptions {
  // Mappings of these files, or of files under these directories, are not
  // roots: cgoheap's own (the ring holds every block's address; the agent).
  std::vector<std::string> skip_files;
  // The scan gives up past this much memory read or time taken (the
  // result then says so): a run must end.
  uint64_t max_bytes = uint64_t{16} << 30;
  double max_seconds = 30;
  // The main thread's registers at its exit (0: unknown): its stack pointer
  // (0 too when its frames are no root), and its thread pointer (FS base:
  // glibc's thread descriptor), whose DTV says how far below it the static
  // thread-local storage reaches.
  uint64_t main_sp = 0;
  uint64_t main_tp = 0;
};

struct ExitScanResult {
  bool done = false;
  std::string skipped;           // why not done
  std::vector<bool> reachable;   // parallel to the blocks given (when done)
  // Of the others (lost), those only other lost blocks pointed to
  // ("indirectly lost": a lost list's nodes after its head).
  std::vector<bool> indirect;
  uint64_t root_bytes = 0;       // memory read as roots
  uint64_t block_bytes = 0;      // memory of reachable blocks read
  uint64_t heap_mappings = 0;    // glibc main arenas ([heap]) walked
  uint64_t thread_stacks = 0;    // threads' stacks found (their TLS scanned)
  uint64_t ended_threads = 0;    // stacks of threads that had ended (glibc's cache): no root
  uint64_t unseen_chunks = 0;    // blocks of the main arena the agent never saw
  uint64_t main_arena = 0;       // where glibc's main arena's chunk pointers lie (0: not found)
};

ExitScanResult ScanReachable(pid_t pid, const std::vector<LiveBlock>& blocks,
                             const ExitScanOptions& options);

// One line of /proc/PID/maps, as the scan reads it (exposed for tests).
struct Mapping {
  uint64_t start = 0, end = 0;
  bool read = false, write = false;
  uint64_t inode = 0;
  uint64_t offset = 0;  // in the file
  std::string path;  // "" for anonymous memory
};
std::vector<Mapping> ParseMaps(const std::string& text);

// The blocks in use in glibc's main arena (heap: the [heap] mapping) that
// are not live blocks (live_starts, ascending): each as the range of its
// user memory. Chunks freed into a thread cache or a fast bin are not in
// use. *top, when given, gets the address of the arena's top chunk (the
// free space its walk ends at), or 0. (Exposed for tests.)
std::vector<std::pair<uint64_t, uint64_t>> UnseenChunks(pid_t pid, const Mapping& heap,
                                                        const std::vector<uint64_t>& live_starts,
                                                        uint64_t* top = nullptr);

}  // namespace cgoheap::client
