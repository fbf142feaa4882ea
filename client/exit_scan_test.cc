#include "client/exit_scan.h"

#include <asm/prctl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <cstring>

#include "gtest/gtest.h"
#include "tests/testing/test_util.h"

namespace cgoheap::client {
namespace {

// The child's memory, as a program's would be at its exit. Pointers that
// must not count are kept complemented.
void* volatile g_root;      // -> A -> B
void* volatile g_hidden;    // ~C; C -> D
char* volatile g_interior;  // into E's middle
void* volatile g_big;       // J (a large block, its own mapping) -> K
uint64_t volatile g_for_thread[2];  // ~G, ~H
thread_local void* volatile t_ptr;  // main thread: F; the other thread: G

enum Block { A, B, C, D, E, F, G, H, I, J, K, kBlocks };
constexpr uint64_t kSizes[kBlocks] = {32, 48, 32, 24, 64, 16, 16, 16, 40, 1 << 20, 8};

struct Report {
  uint64_t address[kBlocks];
  uint64_t tp;
};

int g_release[2];  // the child waits on it

void* OtherThread(void* ready_fd) {
  t_ptr = reinterpret_cast<void*>(~g_for_thread[0]);  // G: in its TLS, a root
  // H: only on its stack, which is not one (its frames are not scanned).
  void* volatile h = reinterpret_cast<void*>(~g_for_thread[1]);
  char c = 1;
  (void)!write(static_cast<int>(reinterpret_cast<intptr_t>(ready_fd)), &c, 1);
  (void)!read(g_release[0], &c, 1);
  (void)h;
  return nullptr;
}

[[noreturn]] void Child(int report_fd) {
  void* p[kBlocks];
  for (int i = 0; i < kBlocks; ++i) p[i] = calloc(1, kSizes[i]);
  g_root = p[A];
  *static_cast<void**>(p[A]) = p[B];
  g_hidden = reinterpret_cast<void*>(~reinterpret_cast<uint64_t>(p[C]));
  *static_cast<void**>(p[C]) = p[D];
  g_interior = static_cast<char*>(p[E]) + 40;
  t_ptr = p[F];
  g_for_thread[0] = ~reinterpret_cast<uint64_t>(p[G]);
  g_for_thread[1] = ~reinterpret_cast<uint64_t>(p[H]);
  // I: pointed to only by a block the scan is not told of (one allocated
  // before the agent started, say): in the main arena, in use, a root.
  void* volatile* unseen = static_cast<void* volatile*>(malloc(32));
  unseen[0] = p[I];
  g_big = p[J];
  static_cast<void**>(p[J])[1000] = p[K];
  int ready[2];
  if (pipe(ready) != 0) _exit(2);
  pthread_t t;
  if (pthread_create(&t, nullptr, OtherThread, reinterpret_cast<void*>(intptr_t{ready[1]})) != 0) {
    _exit(3);
  }
  char c;
  if (read(ready[0], &c, 1) != 1) _exit(4);
  Report r;
  for (int i = 0; i < kBlocks; ++i) r.address[i] = reinterpret_cast<uint64_t>(p[i]);
  memset(p, 0, sizeof p);
  if (syscall(SYS_arch_prctl, ARCH_GET_FS, &r.tp) != 0) _exit(5);
  (void)!write(report_fd, &r, sizeof r);
  (void)!read(g_release[0], &c, 1);
  _exit(0);
}

TEST(ExitScanTest, RootsAreGlobalsThreadLocalStorageAndBlocksTheAgentNeverSaw) {
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  ASSERT_EQ(pipe(g_release), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(report[0]);
    close(g_release[1]);
    Child(report[1]);
  }
  close(report[1]);
  close(g_release[0]);
  Report r{};
  ASSERT_EQ(read(report[0], &r, sizeof r), static_cast<ssize_t>(sizeof r));
  std::vector<LiveBlock> blocks;
  for (int i = 0; i < kBlocks; ++i) blocks.push_back({r.address[i], kSizes[i]});
  ExitScanOptions opts;
  opts.main_tp = r.tp;  // no main_sp: the main thread's stack is no root
  ExitScanResult scan = ScanReachable(pid, blocks, opts);
  // A scan is bounded: past its budget it stops and says so (J alone is
  // 1 MiB).
  ExitScanOptions small = opts;
  small.max_bytes = 1 << 20;
  ExitScanResult stopped = ScanReachable(pid, blocks, small);
  close(g_release[1]);  // the child ends
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(scan.done) << scan.skipped;
  ASSERT_EQ(scan.reachable.size(), blocks.size());
  const char* names = "ABCDEFGHIJK";
  std::string reachable, lost, indirect;
  for (int i = 0; i < kBlocks; ++i) {
    (scan.reachable[i] ? reachable : lost) += names[i];
    if (scan.indirect[i]) indirect += names[i];
  }
  EXPECT_EQ(indirect, "D");  // lost, and only C (lost) points to it
  // A: a global; B: from A; E: by its middle; F, G: thread-local storage of
  // each thread; I: from a block the scan was not told of; J: a global,
  // its own mapping; K: from inside J. C: its pointer hidden; D: only C
  // points to it; H: only the other thread's stack frame.
#if defined(__SANITIZE_ADDRESS__)
  // ASan's allocator has no glibc arena: I's holder is found nowhere.
  EXPECT_EQ(reachable, "ABEFGJK");
  EXPECT_EQ(lost, "CDHI");
#else
  EXPECT_EQ(reachable, "ABEFGIJK");
  EXPECT_EQ(lost, "CDH");
  EXPECT_GE(scan.unseen_chunks, 1u);
  EXPECT_NE(scan.main_arena, 0u);
#endif
  EXPECT_GE(scan.thread_stacks, 1u);
  EXPECT_GT(scan.root_bytes, 0u);
  EXPECT_FALSE(stopped.done);
  EXPECT_EQ(stopped.skipped, "the scan stopped: it would read more than 1 MiB");
  EXPECT_TRUE(stopped.reachable.empty());
}

// Forks a child that makes one block of size bytes (make_block), then
// waits at its "exit"; scans it with its thread pointer as the main one's.
// Forks a child that makes blocks (make returns their addresses) and waits,
// as a program at its exit; while it waits, scan is given its pid, the
// addresses and options holding its main thread's thread pointer. False
// when the child could not be made or did not report.
bool WithAChildsBlocks(const std::function<std::vector<uint64_t>()>& make,
                       const std::function<void(pid_t, const std::vector<uint64_t>&,
                                                const ExitScanOptions&)>& scan) {
  constexpr size_t kMax = 8;
  int report[2], release[2];
  if (pipe(report) != 0 || pipe(release) != 0) return false;
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(report[0]);
    close(release[1]);
    uint64_t r[kMax + 2] = {};  // count, addresses, thread pointer
    {
      std::vector<uint64_t> made = make();
      if (made.empty() || made.size() > kMax) _exit(2);
      r[0] = made.size();
      std::copy(made.begin(), made.end(), r + 1);
      // The vector's own block, unknown to the scan, would be a root.
      std::fill(made.begin(), made.end(), 0);
    }
    if (syscall(SYS_arch_prctl, ARCH_GET_FS, &r[kMax + 1]) != 0) _exit(5);
    (void)!write(report[1], r, sizeof r);
    char c;
    (void)!read(release[0], &c, 1);
    _exit(0);
  }
  close(report[1]);
  close(release[0]);
  uint64_t r[kMax + 2] = {};
  const bool reported = read(report[0], r, sizeof r) == static_cast<ssize_t>(sizeof r);
  if (reported) {
    ExitScanOptions opts;
    opts.main_tp = r[kMax + 1];
    scan(pid, std::vector<uint64_t>(r + 1, r + 1 + r[0]), opts);
  }
  close(report[0]);
  close(release[1]);
  int status;
  waitpid(pid, &status, 0);
  return reported;
}

struct OneBlockScan {
  uint64_t address = 0;
  ExitScanResult scan;
};
OneBlockScan ScanAChildsBlock(size_t size, void* (*make_block)(size_t)) {
  OneBlockScan out;
  WithAChildsBlocks([&] { return std::vector<uint64_t>{reinterpret_cast<uint64_t>(make_block(size))}; },
                    [&](pid_t pid, const std::vector<uint64_t>& a, const ExitScanOptions& opts) {
                      out.address = a[0];
                      out.scan = ScanReachable(pid, {{a[0], size}}, opts);
                    });
  return out;
}

// A block of n bytes, n mod 16 from 1 to 8, ends 8 bytes or less past the
// start of the chunk after it; glibc's arena (in libc's data, a root) holds
// that start when the next chunk is the arena's top. Such a block, pointed
// to by nothing of the program's, is lost (it looked still reachable: a
// C string allocated last on the main thread did).
TEST(ExitScanTest, GlibcsPointerToTheNextChunkDoesNotHoldABlock) {
  // Too large for any bin of this process's arena, under the mmap
  // threshold: cut from the top, which then begins 8 bytes before its end.
  OneBlockScan r = ScanAChildsBlock(120008, [](size_t size) { return malloc(size); });
  ASSERT_TRUE(r.scan.done) << r.scan.skipped;
  ASSERT_EQ(r.scan.reachable.size(), 1u);
  EXPECT_FALSE(r.scan.reachable[0]);
}

// The argument a thread was started with lies in its descriptor
// (struct pthread), beside the root its pthread keys' values are. A thread
// that frees it and allocates again gets the same chunk back (cgo's new
// threads do: the runtime frees their start record, and the thread's next
// C call allocates): what it then drops is lost all the same.
int g_arg_release[2];
void* ThreadFreeingItsArgument(void* arg) {
  const int report_fd = *static_cast<int*>(arg);
  const volatile uint64_t freed = reinterpret_cast<uint64_t>(arg);
  free(arg);
  uint64_t r[4] = {reinterpret_cast<uint64_t>(malloc(sizeof(int))),  // lost
                   reinterpret_cast<uint64_t>(malloc(40)), 0, 0};     // a key's value
  pthread_key_t key;
  if (pthread_key_create(&key, nullptr) != 0 ||
      pthread_setspecific(key, reinterpret_cast<void*>(r[1])) != 0 ||
      syscall(SYS_arch_prctl, ARCH_GET_FS, &r[2]) != 0) {
    _exit(6);
  }
  r[3] = freed;
  (void)!write(report_fd, r, sizeof r);
  char c;
  (void)!read(g_arg_release[0], &c, 1);
  _exit(0);
}

TEST(ExitScanTest, TheArgumentAThreadWasStartedWithIsNoRoot) {
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  ASSERT_EQ(pipe(g_arg_release), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(report[0]);
    close(g_arg_release[1]);
    int* arg = static_cast<int*>(malloc(sizeof(int)));
    *arg = report[1];
    pthread_t t;
    if (pthread_create(&t, nullptr, ThreadFreeingItsArgument, arg) != 0) _exit(3);
    char c;
    (void)!read(g_arg_release[0], &c, 1);
    _exit(0);
  }
  close(report[1]);
  close(g_arg_release[0]);
  uint64_t r[4] = {};
  ASSERT_EQ(read(report[0], r, sizeof r), static_cast<ssize_t>(sizeof r));
  ExitScanResult scan = ScanReachable(pid, {{r[0], sizeof(int)}, {r[1], 40}}, {});
  close(g_arg_release[1]);
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(scan.done) << scan.skipped;
  ASSERT_EQ(scan.reachable.size(), 2u);
  EXPECT_FALSE(scan.reachable[0]) << "the lost block is held by the thread's argument";
  EXPECT_TRUE(scan.reachable[1]) << "the thread's descriptor is no root any more";
  // (The stacks of the threads this test process had before the fork, each
  // with its descriptor, are in the child's memory too.)
  EXPECT_GE(scan.thread_stacks, 1u);
#if !defined(__SANITIZE_ADDRESS__)  // ASan's allocator does not hand a chunk back at once
  EXPECT_EQ(r[0], r[3]) << "the test's premise: the thread's new block is its argument's chunk";
#endif
}

// A thread that ended leaves its stack in glibc's cache, its descriptor and
// static TLS still there: what its thread-local variables held is no root
// (LeakSanitizer's view: only threads not yet gone count).
void* ThreadThatEnds(void* block) {
  t_ptr = block;  // in its TLS, and then it ends
  return nullptr;
}

TEST(ExitScanTest, TheStacksOfThreadsThatEndedAreNoRoots) {
  OneBlockScan r = ScanAChildsBlock(56, [](size_t size) {
    void* block = malloc(size);
    pthread_t t;
    if (pthread_create(&t, nullptr, ThreadThatEnds, block) != 0 || pthread_join(t, nullptr) != 0) {
      _exit(3);
    }
    return block;
  });
  ASSERT_TRUE(r.scan.done) << r.scan.skipped;
  ASSERT_EQ(r.scan.reachable.size(), 1u);
  EXPECT_FALSE(r.scan.reachable[0]) << "held only by the TLS of a thread that ended";
  EXPECT_GE(r.scan.ended_threads, 1u);
}

// A lost cycle (each block pointing to the other, nothing else to either)
// is one "definitely lost" block and the rest "indirectly": the block
// allocated first leads, wherever the allocator put it (a document before
// its nodes, though a node may sit at a lower address).
TEST(ExitScanTest, ALostCycleIsLedByTheBlockAllocatedFirst) {
  ExitScanResult p_first, q_first;
  ASSERT_TRUE(WithAChildsBlocks(
      [] {
        void** p = static_cast<void**>(calloc(1, 48));
        void** q = static_cast<void**>(calloc(1, 48));
        if (p == nullptr || q == nullptr) return std::vector<uint64_t>{};
        p[0] = q;
        q[0] = p;
        return std::vector<uint64_t>{reinterpret_cast<uint64_t>(p), reinterpret_cast<uint64_t>(q)};
      },
      [&](pid_t pid, const std::vector<uint64_t>& a, const ExitScanOptions& opts) {
        // As allocated (p first), and as if q had been allocated first.
        p_first = ScanReachable(pid, {{a[0], 48, 1}, {a[1], 48, 2}}, opts);
        q_first = ScanReachable(pid, {{a[0], 48, 2}, {a[1], 48, 1}}, opts);
      }));
  for (const ExitScanResult* scan : {&p_first, &q_first}) {
    ASSERT_TRUE(scan->done) << scan->skipped;
    ASSERT_EQ(scan->reachable.size(), 2u);
    EXPECT_FALSE(scan->reachable[0]);
    EXPECT_FALSE(scan->reachable[1]);
  }
  // Whichever of the two is at the lower address (glibc's choice), one of
  // the two scans has its leader at the higher one.
  ASSERT_EQ(p_first.indirect.size(), 2u);
  ASSERT_EQ(q_first.indirect.size(), 2u);
  EXPECT_FALSE(p_first.indirect[0]);  // p leads
  EXPECT_TRUE(p_first.indirect[1]);
  EXPECT_TRUE(q_first.indirect[0]);
  EXPECT_FALSE(q_first.indirect[1]);  // q leads
}

// glibc's main arena remembers the chunk its latest split left over
// (last_remainder) after that chunk is merged and handed out again: in a
// block's middle then, as in tests/programs/remainder, where a 1,000-byte
// block was split from a freed 4,000-byte one and freed into it again (its
// thread cache full), and the whole chunk went to a block then dropped.
TEST(ExitScanTest, GlibcsLastRemainderDoesNotHoldABlock) {
  int out[2], in[2];
  ASSERT_EQ(pipe(out), 0);
  ASSERT_EQ(pipe(in), 0);
  const std::string program = testing::Program("remainder");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    execl(program.c_str(), program.c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  close(in[0]);
  char line[64] = {};
  const ssize_t n = read(out[0], line, sizeof line - 1);
  unsigned long block = 0, tp = 0;
  const bool started = n > 0 && sscanf(line, "%lx %lx", &block, &tp) == 2;
  ExitScanResult scan;
  uint64_t last_remainder = 0;
  constexpr uint64_t kLarge = 4000;
  if (started) {
    ExitScanOptions opts;
    opts.main_tp = tp;
    scan = ScanReachable(pid, {{block, kLarge}}, opts);
    iovec local{&last_remainder, 8}, remote{reinterpret_cast<void*>(scan.main_arena + 8), 8};
    if (scan.main_arena == 0 || process_vm_readv(pid, &local, 1, &remote, 1, 0) != 8) {
      last_remainder = 0;
    }
  }
  close(in[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(started) << program << " exited " << WEXITSTATUS(status)
                       << " (3: its premise failed)";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ASSERT_TRUE(scan.done) << scan.skipped;
  ASSERT_EQ(scan.reachable.size(), 1u);
  EXPECT_FALSE(scan.reachable[0]);
  ASSERT_NE(scan.main_arena, 0u) << "glibc's main arena was not found in libc's data";
  EXPECT_GT(last_remainder, block) << "the premise: last_remainder points into the block";
  EXPECT_LT(last_remainder, block + kLarge) << "the premise";
}

// glibc's arena as the walk reads it, built by hand in this process: the
// main thread's cache first, then a chunk in that cache (its key), two in a
// fast bin (safe-linked: the first to the second, the second the bin's
// last), a live block, and two blocks in use that the agent never saw.
TEST(ExitScanTest, ChunksFreedIntoCachesAndFastBinsAreNotRoots) {
  alignas(4096) static uint64_t arena[4096 / 8];
  memset(arena, 0, sizeof arena);
  const uint64_t base = reinterpret_cast<uint64_t>(arena);
  uint64_t at = base;
  auto chunk = [&](uint64_t size) {  // PREV_INUSE set: each looks in use
    uint64_t c = at;
    arena[(c - base) / 8 + 1] = size | 1;
    at += size;
    return c;
  };
  auto word = [&](uint64_t address) -> uint64_t& { return arena[(address - base) / 8]; };
  const uint64_t tcache = chunk(0x290);
  const uint64_t cached = chunk(0x20), fast1 = chunk(0x30), unseen1 = chunk(0x30),
                 fast2 = chunk(0x30), live = chunk(0x20), unseen2 = chunk(0x20);
  chunk(base + sizeof arena - at);  // the top chunk
  const uint64_t key = 0x5eed5eed5eed5eedu;
  word(tcache + 16) = 1;                    // counts[0]
  word(tcache + 16 + 128) = cached + 16;    // entries[0]
  word(cached + 16) = ((cached + 16) >> 12) ^ 0x1234560;  // its next, mangled
  word(cached + 24) = key;
  word(fast1 + 16) = ((fast1 + 16) >> 12) ^ fast2;  // a fast bin's link: a chunk
  word(fast2 + 16) = (fast2 + 16) >> 12;            // the bin's last
  word(unseen1 + 16) = base + 0x10;
  word(unseen2 + 16) = 0;
  Mapping heap{.start = base, .end = base + sizeof arena, .read = true, .write = true, .inode = 0, .path = "[heap]"};
  auto ranges = UnseenChunks(getpid(), heap, {live + 16});
  std::vector<uint64_t> found;
  for (const auto& [from, to] : ranges) found.push_back(from);
  EXPECT_EQ(found, (std::vector<uint64_t>{tcache + 16, unseen1 + 16, unseen2 + 16}));
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[1].second, fast2 + 8);  // to the next chunk's first word, ours when in use
}

TEST(ExitScanTest, AProcessThatIsGoneIsNotScanned) {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status;
  waitpid(pid, &status, 0);
  ExitScanResult scan = ScanReachable(pid, {{0x1000, 16}}, {});
  EXPECT_FALSE(scan.done);
  EXPECT_EQ(scan.skipped, "its memory map could not be read");
}

TEST(ExitScanTest, MapsLinesAreRead) {
  std::vector<Mapping> m = ParseMaps(
      "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/my prog\n"
      "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n"
      "7ffd6e2a2000-7ffd6e2c3000 rw-p 00000000 00:00 0                          [stack]\n"
      "garbage\n"
      // [heap] in two mappings alike is one; not when they differ.
      "55f000000000-55f000240000 rw-p 00000000 00:00 0                          [heap]\n"
      "55f000240000-55f0002bf000 rw-p 00000000 00:00 0                          [heap]\n"
      "55f0002bf000-55f0002c0000 r--p 00000000 00:00 0                          [heap]\n");
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[3].path, "[heap]");
  EXPECT_EQ(m[3].start, 0x55f000000000u);
  EXPECT_EQ(m[3].end, 0x55f0002bf000u);
  EXPECT_EQ(m[4].start, 0x55f0002bf000u);
  EXPECT_FALSE(m[4].write);
  EXPECT_EQ(m[0].start, 0x400000u);
  EXPECT_EQ(m[0].end, 0x452000u);
  EXPECT_TRUE(m[0].read);
  EXPECT_FALSE(m[0].write);
  EXPECT_EQ(m[0].path, "/usr/bin/my prog");
  EXPECT_EQ(m[1].path, "");
  EXPECT_TRUE(m[1].write);
  EXPECT_EQ(m[2].path, "[stack]");
}

}  // namespace
}  // namespace cgoheap::client
