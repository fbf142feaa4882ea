// The agent's core: start-up, the ring writer and the record paths.
//
// Rules that hold for every function reachable from a hook (as in heaptrack
// and tcmalloc, and checked by the allocation guard build): no allocation,
// no stdio, no blocking lock, no exceptions. Start-up (Initialize) and the fork child handler run single
// threaded and may take slow paths; they are kept out of line.
#include "agent/agent.h"

#include <dlfcn.h>
#include <cpuid.h>
#include <fcntl.h>
#include <pthread.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iterator>

#include "agent/cfi_unwinder.h"
#include "agent/clock_choice.h"
#include "agent/pool_env.h"
#include "agent/ring.h"
#include "agent/ring_writer.h"
#include "agent/sampled_set.h"
#include "agent/sampler.h"
#include "symbolize/elf_image.h"
#include "symbolize/go_module.h"
#include "symbolize/gopclntab.h"

namespace cgoheap::agent {
namespace {

__attribute__((tls_model("initial-exec"))) thread_local int t_hook_depth = 0;
__attribute__((tls_model("initial-exec"))) thread_local ring::ThreadLane t_lane{};

constinit std::atomic<ring::RingHeader*> g_ring{nullptr};
constinit ring::RingWriter g_writer;
constinit uint64_t g_self_lo = 0, g_self_hi = 0;
// Which of ring::kAllocatorFunctions the program resolves to code outside
// the agent (ForeignAllocator).
constinit uint32_t g_foreign_allocator = 0;
// Its destructor gives a thread's lane back when the thread exits.
constinit pthread_key_t g_lane_key = 0;
constinit int g_ring_fd = -1;  // the ring file, for allocating lanes as they are claimed
constinit bool g_can_reserve = true;  // its file system supports fallocate
constinit bool g_have_lane_key = false;

// Test builds only (the guard agent): CGOHEAP_TEST_FALLOCATE makes the file
// system of the ring refuse fallocate ("unsupported": EOPNOTSUPP, as some
// file systems do) or have no room for any lane beyond lane 0 ("full":
// ENOSPC), so that both paths are tested wherever the tests run.
enum class FallocateFault { kNone, kUnsupported, kFull };
[[maybe_unused]] constinit FallocateFault g_fallocate_fault = FallocateFault::kNone;

int Reserve(int fd, off_t start, off_t len) {
  if constexpr (kAllocGuard) {
    if (g_fallocate_fault == FallocateFault::kUnsupported ||
        (g_fallocate_fault == FallocateFault::kFull && start != 0)) {
      errno = g_fallocate_fault == FallocateFault::kFull ? ENOSPC : EOPNOTSUPP;
      return -1;
    }
  }
  return fallocate(fd, 0, start, len);
}

// ---- small allocation-free string helpers (start-up only) ----

size_t AppendStr(char* buf, size_t pos, size_t cap, const char* s) {
  while (*s && pos + 1 < cap) buf[pos++] = *s++;
  buf[pos < cap ? pos : cap - 1] = 0;
  return pos;
}

size_t AppendU64(char* buf, size_t pos, size_t cap, uint64_t v, int base) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  while (n && pos + 1 < cap) buf[pos++] = tmp[--n];
  buf[pos < cap ? pos : cap - 1] = 0;
  return pos;
}

}  // namespace

// The environment, read from environ (as glibc's getenv does), not
// through getenv: bash defines getenv, setenv and putenv of its own, which
// before its main look in its shell variables (not made yet) and set them.
const char* Env(const char* name) {
  const size_t len = strlen(name);
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return *e + len + 1;
  }
  return nullptr;
}

namespace {

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* s = Env(name);
  if (s == nullptr || *s == 0) return fallback;
  uint64_t v = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return fallback;
    v = v * 10 + (*s - '0');
  }
  return v;
}

uint64_t NowNanos(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

uint64_t ParseHex(const char*& p, const char* end) {
  uint64_t v = 0;
  for (; p < end; ++p) {
    char c = *p;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) break;
    v = v * 16 + d;
  }
  return v;
}

// dlopens + dlcloses as of the latest snapshot of the mappings.
constinit std::atomic<uint64_t> g_maps_generation{0};
constinit std::atomic<bool> g_snapshotting{false};

int CountObjectChanges(dl_phdr_info* info, size_t, void* out) {
  *static_cast<uint64_t*>(out) = info->dlpi_adds + info->dlpi_subs;
  return 1;
}

// Copies the executable file-backed mappings of /proc/self/maps into the
// ring header as "start end offset path" lines. One writer at a time (the
// caller holds g_snapshotting); the forwarder reads under the seqlock.
void SnapshotMaps(ring::RingHeader* h) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  h->maps_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: writing
  static char buf[8192];  // one writer at a time: g_snapshotting
  size_t have = 0, out = 0;
  for (;;) {
    ssize_t r = read(fd, buf + have, sizeof buf - have);
    if (r <= 0) break;
    have += r;
    size_t start = 0;
    for (;;) {
      char* nl = static_cast<char*>(memchr(buf + start, '\n', have - start));
      if (nl == nullptr) break;
      const char* p = buf + start;
      const char* e = nl;
      uint64_t lo = ParseHex(p, e);
      ++p;
      uint64_t hi = ParseHex(p, e);
      ++p;
      bool exec = p + 4 <= e && p[2] == 'x';
      p += 5;
      uint64_t off = ParseHex(p, e);
      const char* path = static_cast<const char*>(memchr(p, '/', e - p));
      if (exec && path != nullptr && out + (e - path) + 64 < ring::kMapsBytes) {
        out = AppendU64(h->maps, out, ring::kMapsBytes, lo, 16);
        out = AppendStr(h->maps, out, ring::kMapsBytes, " ");
        out = AppendU64(h->maps, out, ring::kMapsBytes, hi, 16);
        out = AppendStr(h->maps, out, ring::kMapsBytes, " ");
        out = AppendU64(h->maps, out, ring::kMapsBytes, off, 16);
        out = AppendStr(h->maps, out, ring::kMapsBytes, " ");
        memcpy(h->maps + out, path, e - path);
        out += e - path;
        h->maps[out++] = '\n';
      }
      start = nl + 1 - buf;
    }
    memmove(buf, buf + start, have - start);
    have -= start;
    if (have == sizeof buf) have = 0;  // an absurd line: drop it
  }
  close(fd);
  h->maps_len = static_cast<uint32_t>(out);
  h->maps_seq.fetch_add(1, std::memory_order_acq_rel);
}

int FindSelf(dl_phdr_info* info, size_t, void*) {
  auto here = reinterpret_cast<uint64_t>(&FindSelf);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    uint64_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
    if (here >= lo && here < hi) {
      g_self_lo = lo;
      g_self_hi = hi;
      return 1;
    }
  }
  return 0;
}

int MainBias(dl_phdr_info* info, size_t, void* out) {
  *static_cast<uint64_t*>(out) = info->dlpi_addr;
  return 1;  // the first object is the main program
}

// Whether the CPU has RDTSCP (CPUID 0x80000001, EDX bit 27), which the TSC
// keys are read with. Some virtual machines hide it even when the kernel
// keeps time with the TSC, and there it is an invalid instruction: the
// program would die of SIGILL at its first allocation.
bool CpuHasRdtscp() {
  if constexpr (kAllocGuard) {
    // Test builds only: a CPU without it, to prove the fallback.
    if (Env("CGOHEAP_TEST_NO_RDTSCP") != nullptr) return false;
  }
  unsigned eax, ebx, ecx, edx;
  constexpr unsigned kRdtscp = 1u << 27;
  return __get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) != 0 && (edx & kRdtscp) != 0;
}

// Whether the CPU has CMPXCHG16B (CPUID 1, ECX bit 13), which lane 0 takes
// stripe keys with.
bool CpuHasCmpxchg16b() {
  if constexpr (kAllocGuard) {
    if (Env("CGOHEAP_TEST_NO_CX16") != nullptr) return false;  // test builds: prove the fallback
  }
  unsigned eax, ebx, ecx, edx;
  constexpr unsigned kCx16 = 1u << 13;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & kCx16) != 0;
}

// Whether the CPU's TSC is invariant (CPUID 0x80000007, EDX bit 8).
bool CpuHasInvariantTsc() {
  unsigned eax, ebx, ecx, edx;
  constexpr unsigned kInvariant = 1u << 8;
  return __get_cpuid(0x80000007, &eax, &ebx, &ecx, &edx) != 0 && (edx & kInvariant) != 0;
}

// Reads a small sysfs file into buf (empty when unreadable).
void ReadSmall(const char* path, char* buf, size_t size) {
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  buf[n > 0 ? n : 0] = '\0';
}

// The clock for record keys (agent/clock_choice.h): stripes, unless
// CGOHEAP_CLOCK asks for the TSC or the counter, or the CPU lacks CMPXCHG16B.
ring::Clock ChooseClock() {
  char current[64], available[256];
  ReadSmall("/sys/devices/system/clocksource/clocksource0/current_clocksource", current,
            sizeof current);
  ReadSmall("/sys/devices/system/clocksource/clocksource0/available_clocksource", available,
            sizeof available);
  ClockFacts facts;
  facts.forced = Env("CGOHEAP_CLOCK");
  facts.cx16 = CpuHasCmpxchg16b();
  facts.rdtscp = CpuHasRdtscp();
  facts.invariant_tsc = CpuHasInvariantTsc();
  if constexpr (kAllocGuard) {
    // Test builds only: another kernel's clocksources, "CURRENT;AVAILABLE"
    // (a kvm-clock VM that still offers the TSC, or one that withdrew it).
    if (const char* c = Env("CGOHEAP_TEST_CLOCKSOURCES")) {
      size_t i = 0;
      for (; c[i] != '\0' && c[i] != ';' && i + 1 < sizeof current; ++i) current[i] = c[i];
      current[i] = '\0';
      size_t j = 0;
      if (c[i] == ';') {
        for (++i; c[i] != '\0' && j + 1 < sizeof available; ++i, ++j) available[j] = c[i];
      }
      available[j] = '\0';
    }
  }
  facts.current = current;
  facts.available = available;
  return DecideClock(facts);
}

// Creates DIR/PID-NANOS.ring and maps it; the forwarder only looks at files
// ending in ".ring", so the header is complete before the rename publishes it.
// The file is sparse: a lane takes memory only once a thread writes it.
ring::RingHeader* CreateRing(const char* dir, uint64_t sample_bytes) {
  uint64_t mb = EnvU64("CGOHEAP_RING_MB", 2);
  if (mb < 1) mb = 1;
  if (mb > 1024) mb = 1024;
  uint64_t lanes = EnvU64("CGOHEAP_RING_LANES", 64);
  if (lanes < 2) lanes = 2;
  if (lanes > ring::kMaxLanes) lanes = ring::kMaxLanes;
  uint64_t words = mb * 1024 * 1024 / 8;
  char tmp[512], final_path[512];
  size_t n = AppendStr(tmp, 0, sizeof tmp, dir);
  n = AppendStr(tmp, n, sizeof tmp, "/");
  n = AppendU64(tmp, n, sizeof tmp, getpid(), 10);
  n = AppendStr(tmp, n, sizeof tmp, "-");
  n = AppendU64(tmp, n, sizeof tmp, NowNanos(CLOCK_MONOTONIC), 10);
  memcpy(final_path, tmp, n + 1);
  AppendStr(final_path, n, sizeof final_path, ".ring");
  AppendStr(tmp, n, sizeof tmp, ".tmp");
  int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return nullptr;
  size_t bytes = ring::RingFileBytes(static_cast<uint32_t>(lanes), words);
  // The file is sparse, but every page the agent writes must exist: a write
  // to a page a full file system cannot supply is a SIGBUS in the program.
  // So the header, the lane descriptors and the shared lane 0 are allocated
  // now, and each other lane when a thread claims it (ReserveLane).
  size_t fixed = ring::kHeaderBytes + lanes * sizeof(ring::LaneDesc) + words * 8;
  bool reserved = ftruncate(fd, bytes) == 0 && Reserve(fd, 0, static_cast<off_t>(fixed)) == 0;
  // A file system without fallocate (EOPNOTSUPP): write without reserving.
  g_can_reserve = reserved;
  if (!reserved && errno != EOPNOTSUPP) {
    close(fd);
    unlink(tmp);
    return nullptr;
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    unlink(tmp);
    return nullptr;
  }
  g_ring_fd = fd;
  auto* h = static_cast<ring::RingHeader*>(p);
  h->version = ring::kVersion;
  if constexpr (kAllocGuard) {
    // Test builds only: the ring an agent of another release would write.
    if (const char* v = Env("CGOHEAP_TEST_RING_VERSION")) {
      h->version = static_cast<uint32_t>(strtoul(v, nullptr, 10));
    }
  }
  h->header_bytes = ring::kHeaderBytes;
  h->lane_words = words;
  h->lane_count = static_cast<uint32_t>(lanes);
  h->clock = static_cast<uint32_t>(ChooseClock());
  h->lanes_used.store(1, std::memory_order_relaxed);
  h->pid = getpid();
  h->ppid = getppid();
  h->start_unix_nanos = static_cast<int64_t>(NowNanos(CLOCK_REALTIME));
  h->sample_bytes = sample_bytes;
  h->foreign_allocator = g_foreign_allocator;
  if (g_boundary.asmcgocall_lo != 0 && !g_boundary.crossing.known()) {
    h->flags |= ring::kFlagGoCrossingUnknown;
  }
  ssize_t n_exe = readlink("/proc/self/exe", h->exe, sizeof h->exe - 1);
  h->exe[n_exe > 0 ? n_exe : 0] = 0;
  if (int cfd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC); cfd >= 0) {
    ssize_t got = read(cfd, h->cmdline, sizeof h->cmdline);
    h->cmdline_len = got > 0 ? static_cast<uint32_t>(got) : 0;
    close(cfd);
  }
  if (const char* svc = Env("CGOHEAP_SERVICE")) AppendStr(h->service, 0, sizeof h->service, svc);
  uint64_t generation = 0;
  dl_iterate_phdr(CountObjectChanges, &generation);
  g_maps_generation.store(generation, std::memory_order_relaxed);
  SnapshotMaps(h);  // start-up or fork child: single threaded
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = ring::kMagic;
  if (rename(tmp, final_path) != 0) {
    munmap(p, bytes);
    close(fd);
    g_ring_fd = -1;
    unlink(tmp);
    return nullptr;
  }
  return h;
}

void ReleaseRing() {
  EnterMode(Mode::kOff);
  ring::RingHeader* h = g_ring.exchange(nullptr, std::memory_order_acq_rel);
  g_writer.Reset(nullptr, 0, nullptr, nullptr);  // every thread's lane is void now
  if (h != nullptr) munmap(h, ring::RingFileBytes(h->lane_count, h->lane_words));
  if (g_ring_fd >= 0) close(g_ring_fd);
  g_ring_fd = -1;
}

// Whether this process is tracked, and if not, why (agent.h's environment).
enum class Followed {
  kYes,
  kNotAsked,  // no ring directory, or a child when children are not traced
  kDriver,    // the go command (or a tool of Go's), running the program
  kNotGo,     // a child that is not a Go program, when only those are traced
};

// A Go runtime in the executable or a library loaded at start-up: looked
// for by Initialize before anything asks.
bool HasGoRuntime() { return __atomic_load_n(&g_boundary.asmcgocall_lo, __ATOMIC_RELAXED) != 0; }

// The executable is one of Go's own commands (the go command: Debian's is
// built with cgo, and `make` or a script may run `go run` under
// --trace-children): a tool of the build, never the user's program.
constinit bool g_go_toolchain = false;

// go_known: whether HasGoRuntime has been settled (Initialize asks before
// it has, to learn whether the libraries are worth looking at).
Followed Decide(bool go_known = true) {
  const char* dir = Env("CGOHEAP_RING_DIR");
  if (dir == nullptr || *dir == 0) return Followed::kNotAsked;
  uint64_t root = EnvU64("CGOHEAP_ROOT_PID", 0);
  if (root == 0) return Followed::kYes;
  if (root == static_cast<uint64_t>(getpid())) {
    return EnvU64("CGOHEAP_ROOT_IS_DRIVER", 0) == 1 ? Followed::kDriver : Followed::kYes;
  }
  switch (EnvU64("CGOHEAP_TRACE_CHILDREN", 0)) {
    case 1:
      return Followed::kYes;
    case 2:  // only Go programs, and not the go command: the programs it runs
      if (g_go_toolchain) return Followed::kDriver;
      return !go_known || HasGoRuntime() ? Followed::kYes : Followed::kNotGo;
    default:
      return Followed::kNotAsked;
  }
}

// Allocates a lane's pages before its thread writes them (see CreateRing);
// false: the file system is full, the thread shares lane 0.
bool ReserveLane(uint32_t lane) {
  ring::RingHeader* h = g_ring.load(std::memory_order_acquire);
  if (h == nullptr || g_ring_fd < 0) return false;
  if (!g_can_reserve) return true;  // the file system cannot: as before, write sparse
  off_t start = static_cast<off_t>(reinterpret_cast<char*>(ring::LaneWords(h, lane)) -
                                   reinterpret_cast<char*>(h));
  return Reserve(g_ring_fd, start, static_cast<off_t>(h->lane_words * 8)) == 0;
}

// The lane's generation rides along, so that a lane of a ring this process
// no longer writes (the parent's, after fork) is never given back.
void OnLaneClaimed(uint32_t gen, uint32_t lane) {
  if (g_have_lane_key) {
    pthread_setspecific(g_lane_key, reinterpret_cast<void*>(uintptr_t{gen} << 32 | lane));
  }
}

void OnThreadExit(void* value) {
  HookGuard guard;
  auto v = reinterpret_cast<uintptr_t>(value);
  if (static_cast<uint32_t>(v >> 32) == t_lane.gen && static_cast<uint32_t>(v) == t_lane.lane) {
    g_writer.ReleaseLane(&t_lane);
  }
}

// A process the launcher does not follow (a child of the program, without
// --trace-children) says it was there when asked (CGOHEAP_NOTE_UNTRACED=1):
// an empty DIR/PID.untraced, which `cgoheap run` counts, so that the report
// of a shell or a make says that the programs they started are not in it.
// A child not followed because it is not a Go program (children traced
// with CGOHEAP_TRACE_CHILDREN=2) leaves DIR/PID.notgo instead, holding the
// name it was run by (gcc, cc1, as: what `go run` starts), which the report
// lists. A process is one pid through its execs (bash forks, the child is
// bash until it execs the program): the note is the latest image's, and an
// image that is followed takes back what an earlier one noted
// (not_followed false).
void NoteUntraced(bool not_followed, bool not_go) {
  const char* dir = Env("CGOHEAP_RING_DIR");
  if (dir == nullptr || *dir == 0 || EnvU64("CGOHEAP_NOTE_UNTRACED", 0) != 1) return;
  char path[512];
  size_t n = AppendStr(path, 0, sizeof path, dir);
  n = AppendStr(path, n, sizeof path, "/");
  n = AppendU64(path, n, sizeof path, getpid(), 10);
  const char* suffix = not_go ? ".notgo" : ".untraced";
  // (The longer suffix fits, so the shorter does.)
  if (AppendStr(path, n, sizeof path, ".untraced") != n + 9) return;  // too long a path
  AppendStr(path, n, sizeof path, suffix);
  if (!not_followed) {
    unlink(path);
    return;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (not_go) {
    const char* name = program_invocation_short_name;
    (void)!write(fd, name, strnlen(name, 255));
  }
  close(fd);
}

// A child of `cgoheap run --trace-children` in exact mode
// (CGOHEAP_AWAIT_TRACER=1, the program itself excepted: it was traced
// before exec) waits until the forwarder has found its ring and decided
// whether to trace it for its exit scan, so that a short child cannot end
// before it is traced. At most 1 s: a forwarder that is gone or busy costs
// one start-up that long.
void AwaitTracer(ring::RingHeader* h) {
  if (EnvU64("CGOHEAP_AWAIT_TRACER", 0) != 1 ||
      EnvU64("CGOHEAP_ROOT_PID", 0) == static_cast<uint64_t>(getpid())) {
    return;
  }
  const uint64_t deadline = NowNanos(CLOCK_MONOTONIC) + 1'000'000'000;
  while (h->tracer_verdict.load(std::memory_order_acquire) == 0) {
    const uint64_t now = NowNanos(CLOCK_MONOTONIC);
    if (now >= deadline) return;
    timespec wait = {0, static_cast<long>(std::min<uint64_t>(deadline - now, 999'999'999))};
    syscall(SYS_futex, &h->tracer_verdict, FUTEX_WAIT, 0, &wait, nullptr, 0);
  }
}

void StartTracking() {
  switch (Decide()) {
    case Followed::kYes:
      // (bash forked, then exec'd a Go program: the fork noted "bash".)
      NoteUntraced(/*not_followed=*/false, /*not_go=*/true);
      break;
    case Followed::kNotAsked:
      NoteUntraced(true, false);
      return;
    case Followed::kNotGo:
      NoteUntraced(true, true);
      return;
    case Followed::kDriver:
      return;
  }
  uint64_t rate = EnvU64("CGOHEAP_SAMPLE_BYTES", 0);
  // Room for the samples of 8 GiB of live heap at this rate, at most half
  // full; small enough at production rates (256 KiB at 512 KiB, mapped
  // written from the start: sampled_set.cc) to stay in cache (every free
  // of a sampled block, or one the filter is unsure of, probes it).
  if (rate != 0 && !g_sampled.ready()) {
    size_t slots = 4096;
    while (slots < (size_t{1} << 22) && slots / 2 < (uint64_t{8} << 30) / rate) slots <<= 1;
    if (!g_sampled.Init(slots)) return;
  }
  ring::RingHeader* h = CreateRing(Env("CGOHEAP_RING_DIR"), rate);
  if (h == nullptr) return;
  g_sample_bytes = rate;
  g_writer.Reset(h, EnvU64("CGOHEAP_FULL_WAIT_MS", 2000) * 1'000'000, ReserveLane,
                 OnLaneClaimed);
  g_ring.store(h, std::memory_order_release);
  EnterMode(rate != 0 ? Mode::kSampled : Mode::kExact);
  if (rate == 0) AwaitTracer(h);
}

// The child of a fork shares the parent's ring mapping: detach from it at
// once, then start over as a process of its own (if children are traced).
void AtForkChild() {
  HookGuard guard;
  ReleaseRing();
  StartTracking();
}

}  // namespace

// Read by every allocator call: a cache line of its own, which nothing
// written often shares.
alignas(64) constinit std::atomic<Mode> g_mode{Mode::kStarting};
constinit uint64_t g_sample_bytes = 0;
constinit SampledSet g_sampled{SampledSet::FloodedTag{}};  // kStarting: every free slow

constinit ModeListener g_mode_listener = nullptr;

void EnterMode(Mode m) {
  if (g_mode_listener != nullptr) g_mode_listener(m);
  if (m == Mode::kExact || m == Mode::kStarting) {
    g_sampled.Flood();
  } else {
    g_sampled.Unflood();
  }
  // This thread's next malloc takes the slow path, which sets its countdown
  // for the new mode (a sampled one starts afresh, as a new thread's).
  t_sampler = ThreadSampler{0, 0};
  g_mode.store(m, std::memory_order_release);
}

HookGuard::HookGuard() : entered_(t_hook_depth++ == 0) {}
HookGuard::~HookGuard() { --t_hook_depth; }

bool InHook() { return t_hook_depth > 0; }

void AllocatedInsideHook() {
  static constexpr char kMsg[] =
      "cgoheap agent: the allocator was called from inside a hook (allocation guard)\n";
  (void)!write(2, kMsg, sizeof kMsg - 1);
  abort();
}

constinit GoBoundary g_boundary{};
constinit std::atomic<uint32_t> g_boundary_epoch{0};

void AgentRange(uint64_t* lo, uint64_t* hi) {
  *lo = g_self_lo;
  *hi = g_self_hi;
}

namespace {

// A function's range, from the symbol tables, else from .gopclntab (a `-s -w`
// binary). names: the symbol names it may have, in order.
bool FindFunction(const ElfImage& elf, const GoPclntab* tab,
                  std::initializer_list<const char*> names, uint64_t* lo, uint64_t* hi) {
  uint64_t value = 0, size = 0;
  for (const char* name : names) {
    if (elf.FindSymbol(name, &value, &size)) {
      *lo = value;
      *hi = value + (size ? size : 1);
      return true;
    }
  }
  GoPclntab::Func f;
  for (const char* name : names) {
    if (tab != nullptr && tab->FindByName(name, &f)) {
      *lo = f.entry;
      *hi = f.end;
      return true;
    }
  }
  return false;
}

// The code of [lo, hi) (link addresses) from the file: the same bytes as
// the mapped text.
const uint8_t* CodeAt(const ElfSection& text, uint64_t lo, uint64_t hi) {
  if (text.data == nullptr || lo < text.addr || hi <= lo || hi - lo > 4096 ||
      hi - text.addr > text.size) {
    return nullptr;
  }
  return text.data + (lo - text.addr);
}

}  // namespace

bool FindGoBoundary(const char* exe, uint64_t bias, GoBoundary* out, bool* toolchain) {
  ElfImage elf;
  if (!elf.Open(exe)) return false;
  ElfSection text;
  GoModule module;
  GoPclntab tab;
  bool have_text = elf.FindSection(".text", &text);
  bool have_tab = ReadGoModule(elf, &module) &&
                  tab.Init(module.pclntab, module.pclntab_size, module.text_start);
  if (toolchain != nullptr) *toolchain = strncmp(module.main_package, "cmd/", 4) == 0;
  const GoPclntab* pcln = have_tab ? &tab : nullptr;
  uint64_t lo, hi;
  if (!FindFunction(elf, pcln, {"runtime.asmcgocall.abi0", "runtime.asmcgocall"}, &lo, &hi)) {
    return false;
  }
  out->asmcgocall_lo = lo + bias;
  out->asmcgocall_hi = hi + bias;
  if (have_tab) {
    out->text_lo = tab.text_start() + bias;
    out->text_hi = tab.text_end() + bias;
  }
  if (!have_text) return true;
  if (const uint8_t* code = CodeAt(text, lo, hi)) {
    DecodeAsmcgocall(code, hi - lo, lo + bias, &out->crossing);
  }
  uint64_t cb_lo, cb_hi;
  if (FindFunction(elf, pcln, {"runtime.cgocallback.abi0", "runtime.cgocallback"}, &cb_lo,
                   &cb_hi) &&
      FindFunction(elf, pcln, {"crosscall2"}, &lo, &hi)) {
    out->cgocallback_lo = cb_lo + bias;
    out->cgocallback_hi = cb_hi + bias;
    if (const uint8_t* code = CodeAt(text, lo, hi)) {
      DecodeCrosscall2(code, hi - lo, lo + bias, cb_lo + bias, cb_hi + bias, &out->callback);
    }
  }
  return true;
}

namespace {

// The objects loaded at start-up: their paths (the loader's own strings,
// kept while the object is loaded) and biases.
struct LoadedObjects {
  struct Object {
    const char* path;
    uint64_t bias;
  };
  Object objects[256];
  int n = 0;
};

// The bases of the libraries FindGoLibraryBoundary has looked at (a library
// unloaded and another loaded at its base is not looked at: rare, and only a
// Go library loaded that way goes unseen).
constinit uint64_t g_checked_bases[512];
constinit size_t g_nchecked = 0;

bool Checked(uint64_t base) {
  for (size_t i = 0; i < g_nchecked; ++i) {
    if (g_checked_bases[i] == base) return true;
  }
  return false;
}

int ListObjects(dl_phdr_info* info, size_t, void* out) {
  auto* list = static_cast<LoadedObjects*>(out);
  // The executable ("") and the vDSO have no path of their own.
  if (info->dlpi_name == nullptr || info->dlpi_name[0] != '/') return 0;
  if (Checked(info->dlpi_addr)) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {  // the agent itself
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && g_self_lo - info->dlpi_addr - ph.p_vaddr < ph.p_memsz) return 0;
  }
  if (list->n < static_cast<int>(std::size(list->objects))) {
    list->objects[list->n++] = {info->dlpi_name, info->dlpi_addr};
  }
  return 0;
}

}  // namespace

bool FindGoLibraryBoundary(GoBoundary* out) {
  LoadedObjects list;
  dl_iterate_phdr(ListObjects, &list);
  for (int i = 0; i < list.n; ++i) {
    if (g_nchecked < std::size(g_checked_bases)) {
      g_checked_bases[g_nchecked++] = list.objects[i].bias;
    }
    // Only a Go binary has these: the other libraries' symbols are not read.
    ElfImage elf;
    ElfSection section;
    if (!elf.Open(list.objects[i].path) || (!elf.FindSection(".gopclntab", &section) &&
                                            !elf.FindSection(".go.buildinfo", &section))) {
      continue;
    }
    if (FindGoBoundary(list.objects[i].path, list.objects[i].bias, out)) return true;
  }
  return false;
}

// agent/pool_env.h says why. Here only: the constructor runs before any
// thread. Go never sees the change (it keeps the environment it started
// with), so neither do the processes it starts.
// The C library's setenv, not one the executable defines (bash's, above).
void AskPoolsForMalloc() {
  using SetenvFn = int (*)(const char*, const char*, int);
  auto libc_setenv = reinterpret_cast<SetenvFn>(dlsym(RTLD_NEXT, "setenv"));
  if (libc_setenv == nullptr) return;
  for (const EnvSetting& e : kPoolsUseMalloc) libc_setenv(e.name, e.value, 0);
}

// The allocator functions that the program's calls do not reach the agent
// through: the definition symbol lookup finds first (the executable's own,
// a statically linked jemalloc say, or a library preloaded before the agent)
// lies outside the agent's code. The report says so: "no leaks" would be a
// lie about a heap the agent never saw.
uint32_t ForeignAllocator() {
  uint32_t mask = 0;
  for (size_t i = 0; i < std::size(ring::kAllocatorFunctions); ++i) {
    auto f = reinterpret_cast<uint64_t>(dlsym(RTLD_DEFAULT, ring::kAllocatorFunctions[i]));
    if (f != 0 && (f < g_self_lo || f >= g_self_hi)) mask |= 1u << i;
  }
  return mask;
}

__attribute__((cold, noinline)) void Initialize() {
  dl_iterate_phdr(FindSelf, nullptr);
  {
    HookGuard guard;
    uint64_t bias = 0;
    dl_iterate_phdr(MainBias, &bias);
    // The Go runtime is the executable's, or, in a C program that links a
    // Go library (-buildmode=c-shared), that library's: looked for only in
    // a process that may be tracked (the others' libraries are not opened).
    if (!FindGoBoundary("/proc/self/exe", bias, &g_boundary, &g_go_toolchain) &&
        Decide(/*go_known=*/false) == Followed::kYes) {
      FindGoLibraryBoundary(&g_boundary);
    }
  }
  // Outside the guard: setenv and dlsym may allocate (from the real
  // allocator: nothing is tracked yet).
  if (Decide() == Followed::kYes) {
    AskPoolsForMalloc();
    g_foreign_allocator = ForeignAllocator();
  }
  HookGuard guard;
  if constexpr (kAllocGuard) {
    // Test builds only: behave as with a Go release whose asmcgocall is not
    // understood, to prove that it is said and that nothing is hidden.
    if (Env("CGOHEAP_TEST_UNKNOWN_GO_CROSSING") != nullptr) g_boundary.crossing = GoCrossing{};
    if (const char* f = Env("CGOHEAP_TEST_FALLOCATE"); f != nullptr) {
      g_fallocate_fault = strcmp(f, "unsupported") == 0 ? FallocateFault::kUnsupported
                          : strcmp(f, "full") == 0      ? FallocateFault::kFull
                                                        : FallocateFault::kNone;
    }
  }
  pthread_atfork(nullptr, nullptr, AtForkChild);
  g_have_lane_key = pthread_key_create(&g_lane_key, OnThreadExit) == 0;
  StartTracking();
}

}  // namespace cgoheap::agent

using cgoheap::agent::g_ring;
using cgoheap::agent::g_sample_bytes;
using cgoheap::agent::g_sampled;
using cgoheap::agent::g_writer;

extern "C" bool cgoheap_active() {
  return g_ring.load(std::memory_order_relaxed) != nullptr;
}

namespace cgoheap::agent {
namespace {

// A Go library loaded after start-up (dlopen: Python's ctypes, a plugin),
// in a program that had no Go runtime before: its boundary, published for
// the captures of every thread. The layouts first, then the ranges the
// capture tests before it reads them (stack_capture.cc, InAsmcgocall), each
// range's low end last (0 until then: no pc is inside).
void PublishBoundary(const GoBoundary& b, ring::RingHeader* h) {
  g_boundary.crossing = b.crossing;
  g_boundary.callback = b.callback;
  g_boundary.cgocallback_lo = b.cgocallback_lo;
  g_boundary.cgocallback_hi = b.cgocallback_hi;
  __atomic_store_n(&g_boundary.asmcgocall_hi, b.asmcgocall_hi, __ATOMIC_RELEASE);
  __atomic_store_n(&g_boundary.asmcgocall_lo, b.asmcgocall_lo, __ATOMIC_RELEASE);
  __atomic_store_n(&g_boundary.text_hi, b.text_hi, __ATOMIC_RELEASE);
  __atomic_store_n(&g_boundary.text_lo, b.text_lo, __ATOMIC_RELEASE);
  g_boundary_epoch.fetch_add(1, std::memory_order_release);
  if (!b.crossing.known()) {
    __atomic_fetch_or(&h->flags, ring::kFlagGoCrossingUnknown, __ATOMIC_RELAXED);
  }
}

// Code of an object mapped after the last snapshot was just unwound (the CFI
// unwinder saw dlopen's counter move): snapshot the mappings again, so that
// the forwarder can symbolize it even after the process is gone.
// A Go library among the objects loaded since, in a program without a Go
// runtime until then, is published.
__attribute__((noinline)) void RefreshMaps(ring::RingHeader* h, uint64_t generation) {
  if (g_snapshotting.exchange(true, std::memory_order_acquire)) return;  // another thread is at it
  if (g_maps_generation.load(std::memory_order_relaxed) != generation) {
    if (__atomic_load_n(&g_boundary.asmcgocall_lo, __ATOMIC_RELAXED) == 0) {
      GoBoundary found;
      if (FindGoLibraryBoundary(&found)) PublishBoundary(found, h);
    }
    SnapshotMaps(h);
    g_maps_generation.store(generation, std::memory_order_relaxed);
  }
  g_snapshotting.store(false, std::memory_order_release);
}

}  // namespace
}  // namespace cgoheap::agent

extern "C" void cgoheap_on_alloc(int api, void* ptr, size_t size, const void* frame) {
  using namespace cgoheap;
  ring::RingHeader* h = g_ring.load(std::memory_order_acquire);
  if (h == nullptr) return;
  agent::HookGuard guard;
  if (!guard.entered()) return;
  if (g_sample_bytes != 0 && !g_sampled.Insert(reinterpret_cast<uint64_t>(ptr))) {
    // Too many live samples to remember: recording it would report its
    // eventual free as never happening.
    h->dropped_events.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  uint64_t words[ring::kRecordFixedWords];
  // One frame more than a record holds: whether the stack goes on.
  uint64_t buffer[ring::kMaxFrames + 1];
  const uint64_t* frames;
  int nframes = agent::CaptureStack(buffer, ring::kMaxFrames + 1, frame, &frames);
  if (nframes == 0 || agent::t_capture_cut_short) {
    h->unwind_failures.fetch_add(1, std::memory_order_relaxed);
  }
  const bool frames_cut = nframes > ring::kMaxFrames;
  if (frames_cut) nframes = ring::kMaxFrames;
  uint64_t generation = agent::CfiObjectsGeneration();
  if (generation != 0 && generation != agent::g_maps_generation.load(std::memory_order_relaxed)) {
    agent::RefreshMaps(h, generation);
  }
  unsigned nwords = ring::kRecordFixedWords + nframes;
  words[0] = ring::EncodeHeader(ring::Kind::kAlloc, static_cast<ring::Api>(api), nframes, nwords) |
             (frames_cut ? ring::kHeaderFramesCut : 0);
  words[2] = reinterpret_cast<uint64_t>(ptr);
  words[3] = size;
  if (!g_writer.PublishAlloc(&agent::t_lane, words, frames, static_cast<unsigned>(nframes), size) &&
      g_sample_bytes != 0) {
    g_sampled.Erase(reinterpret_cast<uint64_t>(ptr));  // not recorded: neither is its free
  }
}

extern "C" void cgoheap_on_free(void* ptr) {
  using namespace cgoheap;
  ring::RingHeader* h = g_ring.load(std::memory_order_acquire);
  if (h == nullptr) return;
  // Sampled mode: only the frees of sampled blocks matter.
  if (g_sample_bytes != 0 && !g_sampled.Erase(reinterpret_cast<uint64_t>(ptr))) return;
  agent::HookGuard guard;
  if (!guard.entered()) return;
  // Exact mode: a block this thread allocated and the reader has not seen
  // yet leaves no record at all (ring.h, "Cancelled pairs").
  if (g_writer.CancelAlloc(&agent::t_lane, reinterpret_cast<uint64_t>(ptr))) return;
  uint64_t words[ring::kRecordFixedWords];
  words[0] = ring::EncodeHeader(ring::Kind::kFree, ring::Api::kFree, 0, ring::kRecordFixedWords);
  words[2] = reinterpret_cast<uint64_t>(ptr);
  words[3] = 0;
  g_writer.Publish(&agent::t_lane, words, ring::kRecordFixedWords, 0);
}
