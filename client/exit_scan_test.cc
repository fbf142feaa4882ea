#include "client/exit_scan.h"

#include <asm/prctl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

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
  close(g_release[1]);  // the child ends
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(scan.done) << scan.skipped;
  ASSERT_EQ(scan.reachable.size(), blocks.size());
  const char* names = "ABCDEFGHIJK";
  std::string reachable, lost;
  for (int i = 0; i < kBlocks; ++i) (scan.reachable[i] ? reachable : lost) += names[i];
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
#endif
  EXPECT_GE(scan.thread_stacks, 1u);
  EXPECT_GT(scan.root_bytes, 0u);
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
      "garbage\n");
  ASSERT_EQ(m.size(), 3u);
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
