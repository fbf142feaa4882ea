// The event ring: a file-backed shared mapping that the agent writes inside
// the target process and the forwarder drains from outside it.
//
// Why a file and not a socket or an in-process sender thread: a Go program
// exits with the raw exit_group syscall and never runs atexit handlers or ELF
// destructors (ARCHITECTURE.md fact 1), so whatever the target still holds at
// exit would be lost. The mapping outlives the process; the forwarder reads
// the last events after the target is gone and reports its end itself.
//
// Layout: one RingHeader (kHeaderBytes), then capacity_words 64-bit words.
// Records are whole words at logical word positions (pos & mask). Writers
// reserve space with a CAS on `reserve`, write the body, and publish the
// header word last with a release store. The reader consumes in order and
// advances `tail`; it never has to clear what it read: a header carries the
// parity of its lap (pos / capacity), so a header left from the previous lap
// reads as "not yet written", and a body word (an address, a size, a return
// address: top byte 0) can never pass for a header (kind in the top byte).
// Multi-producer, single-consumer, lock-free.
//
//   word 0: header = kind(8) | api(8) | nframes(16) | nwords(16) | 0(14) | lap(1) | 1(1)
//   word 1: address
//   word 2: size (0 for frees)
//   word 3..: return addresses, innermost first (allocations only)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cgoheap::ring {

inline constexpr uint64_t kMagic = 0x474e495248474f43ULL;  // "COGHRING"
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 64 * 1024;
inline constexpr size_t kMapsBytes = 48 * 1024;
inline constexpr int kMaxFrames = 64;
inline constexpr int kRecordFixedWords = 3;

enum class Kind : uint8_t { kAlloc = 1, kFree = 2 };

// Which allocator entry point made the event; becomes the innermost frame.
enum class Api : uint8_t {
  kMalloc = 0,
  kCalloc,
  kRealloc,
  kReallocarray,
  kPosixMemalign,
  kAlignedAlloc,
  kMemalign,
  kValloc,
  kPvalloc,
  kFree,
  kCount,
};

inline const char* ApiName(Api api) {
  static constexpr const char* kNames[] = {
      "malloc",   "calloc", "realloc", "reallocarray", "posix_memalign",
      "aligned_alloc", "memalign", "valloc", "pvalloc", "free"};
  auto i = static_cast<unsigned>(api);
  return i < static_cast<unsigned>(Api::kCount) ? kNames[i] : "?";
}

// The header without its lap bit; the writer adds the lap (WithLap).
inline constexpr uint64_t EncodeHeader(Kind kind, Api api, unsigned nframes,
                                       unsigned nwords) {
  return (uint64_t{static_cast<uint8_t>(kind)} << 56) |
         (uint64_t{static_cast<uint8_t>(api)} << 48) |
         (uint64_t{nframes & 0xffff} << 32) | (uint64_t{nwords & 0xffff} << 16) |
         1;  // never zero
}
// Lap parity of logical position pos in a ring of capacity words.
inline constexpr uint64_t LapBit(uint64_t pos, uint64_t capacity) {
  return (pos & capacity) ? 2 : 0;
}
inline constexpr uint64_t WithLap(uint64_t header, uint64_t pos, uint64_t capacity) {
  return (header & ~uint64_t{2}) | LapBit(pos, capacity);
}
// A committed header of the record at pos: a kind, and the current lap.
inline constexpr bool IsHeaderAt(uint64_t word, uint64_t pos, uint64_t capacity) {
  return (word >> 56) != 0 && (word & 1) && (word & 2) == LapBit(pos, capacity);
}
inline constexpr Kind HeaderKind(uint64_t h) { return static_cast<Kind>(h >> 56); }
inline constexpr Api HeaderApi(uint64_t h) { return static_cast<Api>((h >> 48) & 0xff); }
inline constexpr unsigned HeaderFrames(uint64_t h) { return (h >> 32) & 0xffff; }
inline constexpr unsigned HeaderWords(uint64_t h) { return (h >> 16) & 0xffff; }

struct alignas(64) RingHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t header_bytes;
  uint64_t capacity_words;  // power of two
  int32_t pid;
  int32_t ppid;
  int64_t start_unix_nanos;
  uint64_t sample_bytes;    // 0: exact mode
  uint32_t flags;
  uint32_t reserved0;

  alignas(64) std::atomic<uint64_t> reserve;  // next free word (writers)
  alignas(64) std::atomic<uint64_t> tail;     // next unread word (reader)
  alignas(64) std::atomic<uint64_t> dropped_events;  // ring full, gave up
  std::atomic<uint64_t> dropped_bytes;
  std::atomic<uint64_t> reserved0_events;  // unused: a shared counter per event costs a contended RMW
  std::atomic<uint64_t> unwind_failures;
  // Identity, written once at start-up: the forwarder may first look at the
  // ring after the process is gone, when /proc/PID is too.
  char exe[512];          // readlink /proc/self/exe, NUL-terminated
  char cmdline[1024];     // /proc/self/cmdline: NUL-separated, cmdline_len bytes
  uint32_t cmdline_len;
  char service[128];      // $CGOHEAP_SERVICE, NUL-terminated
  // Executable mappings of the process ("start end offset path\n" lines),
  // rewritten after each dlopen/dlclose under a seqlock: the forwarder may
  // read it after the process has exited, when /proc/PID/maps is gone.
  alignas(64) std::atomic<uint64_t> maps_seq;  // odd while being written
  uint32_t maps_len;
  char maps[kMapsBytes];
};

static_assert(sizeof(RingHeader) <= kHeaderBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

inline uint64_t* RingWords(RingHeader* h) {
  return reinterpret_cast<uint64_t*>(reinterpret_cast<char*>(h) + kHeaderBytes);
}

inline size_t RingFileBytes(uint64_t capacity_words) {
  return kHeaderBytes + capacity_words * sizeof(uint64_t);
}

}  // namespace cgoheap::ring
