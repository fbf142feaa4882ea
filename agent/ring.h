// The event ring: a file-backed shared mapping that the agent writes inside
// the target process and the forwarder drains from outside it.
//
// Why a file and not a socket or an in-process sender thread: a Go program
// exits with the raw exit_group syscall and never runs atexit handlers or ELF
// destructors (docs/ARCHITECTURE.md fact 1), so whatever the target still holds at
// exit would be lost. The mapping outlives the process; the forwarder reads
// the last events after the target is gone and reports its end itself.
//
// Lanes. One shared ring costs every event an atomic read-modify-write on a
// cache line all threads fight over: on a cgo churn loop that was most of the
// agent's time. So the ring is split into lanes: a thread claims a lane of
// its own on its first event (CAS on the lane's owner, once) and from then on
// writes it alone with plain stores and one release store of the lane's head
// (single producer, single consumer). Lane 0 is shared by any thread that
// finds no free lane (multi-producer: writers reserve with a CAS, as the
// whole ring used to).
//
// Order across lanes. What must be ordered is only what depends: a free of
// an address after the allocation that returned it, and an allocation of an
// address after the free that gave it back, on whichever threads. Every
// record carries a key, and a record's key is larger than the key of every
// record it depends on; each lane's keys rise with its positions; and a
// record is published after every record it depends on was. Keys come from:
//   - stripes (the default): each thread keeps a clock, and 4096 words in
//     the agent, one per address stripe, keep the largest key of an event
//     on an address of that stripe. An event's key is 1 + the largest of
//     its thread's clock and its stripe's word, which it then raises. An
//     address passes between threads only through the allocator or the
//     program's own synchronization, after its last event raised the
//     stripe; so the next event on it reads a larger value (a Lamport clock
//     whose messages are the stripes). No shared counter and no clock: on
//     a churn loop each thread touches its own stripes' cache lines.
//   - the TSC (read with RDTSCP, which waits for earlier loads), where it is
//     usable (agent/clock_choice.h), or a shared counter: CGOHEAP_CLOCK=tsc
//     or counter, and CPUs without CMPXCHG16B (stripes need it for lane 0).
// The forwarder takes the record with the smallest key among the lanes'
// next records, and only records published before it began to look: each
// round reads every lane's head once to fix what may be taken, then once
// more to see what is there. A record R that was published before the first
// read had every record it depends on published before the second, so that
// one is seen, and has a smaller key: it is taken first. See
// client/ring_reader.cc.
//
// Cancelled pairs (Clock::kStripes, exact mode, a thread's own lane). Most
// blocks of a malloc-bound program are freed by the thread that allocated
// them, microseconds later, long before the forwarder reads the allocation.
// Such a free turns the allocation's header into kind kCancelled (same size,
// same lap) instead of publishing a record of its own: the forwarder skips
// the record and counts a cancelled pair. The owner may cancel only its own
// allocation in its own lane, while the newest event on the address's
// stripe is still that allocation (no thread freed the block and had it
// back from the allocator since), and while its words are still in the
// lane (less than a lap behind the head). Owner and reader decide with one
// compare-and-swap each on the header: the owner from kAlloc to kCancelled,
// the reader, when it takes the allocation, from kAlloc to kTaken. One of
// the two wins: a taken allocation's free is published as a record; a
// cancelled allocation's copy is dropped. A restarted reader takes a kTaken
// record again (the reader before it may not have sent it).
// See RingWriter::CancelAlloc and RingReader::Confirm.
//
// Rolled-back pairs. When the cancelled allocation is also the newest
// record of the lane and the reader has not looked at the lane past its
// start, the owner does not mark it: it moves the head back to the record's
// start, and the next record is written over it. A thread that frees what
// it just allocated then writes the same few cache lines over and over,
// never new ones, and the reader has nothing to skip. The reader says how
// far it looked in the lane's `seen` word: before it reads the head, it
// stores "everything" there (UINT64_MAX), then, once it has the head, the
// furthest head it has read so far (never less: the head it just read may
// be one the owner is only trying out). The owner moves its head back (a
// sequentially consistent store), then reads `seen`: if the reader may have
// looked past the record's start, it puts the head back as it was and
// marks the record instead. Of the two stores, one is first: either the
// owner sees the reader's claim, or the reader's head is the moved one. So
// the reader never reads a word the owner will write again, and every head
// it uses is a record boundary. The owner counts its rolled-back pairs in
// the lane's `rolled_back`, for the reader to add to the cancelled ones
// (from `rolled_back_sent`, where the reader before it stopped).
// The reader looks at the lanes once per batch it reads (RingReader::
// NextMany), not again and again while records keep coming: a reader that
// looked without pause would claim each allocation the moment it was
// published, before its thread could take it back.
//
// Inside a lane, records are whole words at logical positions (pos & mask).
// The header word is written last; it carries the parity of its lap
// (pos / capacity), so a header left from the previous lap reads as "not yet
// written", and a body word (an address, a size, a key, a return address: top
// byte 0) can never pass for a header (kind in the top byte). The reader
// never clears what it read.
//
//   word 0: header = kind(8) | api(8) | nframes(16) | nwords(16) | 0(14) | lap(1) | 1(1)
//   word 1: key (clock value; see above)
//   word 2: address
//   word 3: size (0 for frees)
//   word 4..: return addresses, innermost first (allocations only)
//
// File: RingHeader (kHeaderBytes), lane_count LaneDescs, then lane_count
// lanes of lane_words words each.
#pragma once

#include <x86intrin.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cgoheap::ring {

inline constexpr uint64_t kMagic = 0x474e495248474f43ULL;  // "COGHRING"
inline constexpr uint32_t kVersion = 5;
inline constexpr size_t kHeaderBytes = 64 * 1024;
inline constexpr size_t kMapsBytes = 48 * 1024;
// The frames a record holds: the innermost ones of a deeper stack, whose
// header then carries kHeaderFramesCut (as Go's heap profile keeps 128 since
// Go 1.23; before, 32).
inline constexpr int kMaxFrames = 128;
inline constexpr int kRecordFixedWords = 4;
inline constexpr uint32_t kMaxLanes = 4096;

// kCancelled: an allocation its own thread freed before the reader took it;
// read as nothing. kTaken: an allocation a reader took; read as kAlloc. (See
// "Cancelled pairs".)
enum class Kind : uint8_t { kAlloc = 1, kFree = 2, kCancelled = 3, kTaken = 4 };

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
// Header bit 2: the stack went on past the kMaxFrames frames recorded.
inline constexpr uint64_t kHeaderFramesCut = 4;
inline constexpr bool HeaderFramesCut(uint64_t h) { return (h & kHeaderFramesCut) != 0; }
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
// The header h with another kind, all else (size, lap) kept.
inline constexpr uint64_t WithKind(uint64_t h, Kind kind) {
  return (h & ~(uint64_t{0xff} << 56)) | (uint64_t{static_cast<uint8_t>(kind)} << 56);
}

// RingHeader::flags.
// The executable calls C through runtime.asmcgocall, but asmcgocall's frame
// is not one the agent understands (a Go release newer than it knows): the
// Go frames above every cgo call are missing from this process's stacks.
inline constexpr uint32_t kFlagGoCrossingUnknown = 1;

// The allocator's entry points the agent interposes that a program may
// define itself: a statically linked jemalloc, tcmalloc or mimalloc puts
// them in the executable, which comes before any preloaded library in
// symbol lookup, so the program's calls never reach the agent. Bit i of
// RingHeader::foreign_allocator: kAllocatorFunctions[i] resolves to code
// outside the agent. (Not strdup and the like: a program's own strdup
// still calls malloc.)
inline constexpr const char* kAllocatorFunctions[] = {
    "malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
    "valloc", "pvalloc"};

// How record keys are made (see "Order across lanes" above and
// RingWriter): the TSC, a shared counter, or per-thread clocks that meet at
// address stripes (the default; no clock and no shared cache line).
enum class Clock : uint32_t { kTsc = 1, kCounter = 2, kStripes = 3 };

struct alignas(64) RingHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t header_bytes;
  uint64_t lane_words;      // words per lane, a power of two
  int32_t pid;
  int32_t ppid;
  int64_t start_unix_nanos;
  uint64_t sample_bytes;    // 0: exact mode
  uint32_t flags;
  uint32_t lane_count;      // lanes in the file, lane 0 the shared one
  uint32_t clock;           // Clock
  uint32_t foreign_allocator;  // bits over kAllocatorFunctions (0 from agents before it)

  alignas(64) std::atomic<uint64_t> counter;     // Clock::kCounter: the next key
  alignas(64) std::atomic<uint32_t> lanes_used;  // lanes ever claimed + 1: the reader looks at [0, lanes_used)
  // Set to 1 (and woken: a shared futex) by the forwarder once it has found
  // the ring and decided whether to trace the process for its exit scan; a
  // child of `cgoheap run --trace-children` in exact mode waits for it at
  // start-up (CGOHEAP_AWAIT_TRACER), so that it cannot end before. In the
  // padding of lanes_used's line: the layout is unchanged, 0 in rings of
  // agents before it, which never wait.
  std::atomic<uint32_t> tracer_verdict;
  alignas(64) std::atomic<uint64_t> dropped_events;  // lane full, gave up
  std::atomic<uint64_t> dropped_bytes;
  // The process id the forwarder gave this process (0 until one did): a
  // forwarder restarted after a crash finds it here and goes on with the
  // same process instead of starting a second one. The agent never writes it.
  std::atomic<uint64_t> forwarder_process_id;
  std::atomic<uint64_t> unwind_failures;  // stacks cut short (see agent.h)
  // Identity, written once at start-up: the forwarder may first look at the
  // ring after the process is gone, when /proc/PID is too.
  char exe[512];          // readlink /proc/self/exe, NUL-terminated
  char cmdline[1024];     // /proc/self/cmdline: NUL-separated, cmdline_len bytes
  uint32_t cmdline_len;
  char service[128];      // $CGOHEAP_SERVICE, NUL-terminated
  // Executable mappings of the process ("start end offset path\n" lines),
  // rewritten under a seqlock when code of an object dlopened since is first
  // unwound: the forwarder may read it after the process has exited, when
  // /proc/PID/maps is gone.
  alignas(64) std::atomic<uint64_t> maps_seq;  // odd while being written
  uint32_t maps_len;
  char maps[kMapsBytes];
};

// One lane's control words. The writer's line and the reader's line are
// apart, so each side writes only its own.
struct alignas(64) LaneDesc {
  // Lanes 1..: published end (the owner's release store); lane 0: reserved
  // end (writers' CAS), records committed by their header words.
  std::atomic<uint64_t> head;
  // Clock::kStripes. Lane 0: the key of the record reserved last, moved with
  // head by one 16-byte CAS, so that keys rise with positions. Lanes 1..:
  // the last key of the owner that gave the lane back; the next owner's keys
  // start above it.
  std::atomic<uint64_t> last_key;
  std::atomic<uint32_t> owner;         // tid of the owning thread; 0: free (lane 0: unused)
  uint32_t reserved0;
  std::atomic<uint64_t> stalled_tail;  // exact mode: 1 + the tail a full-lane wait gave up at (0: none)
  // Lanes 1..: allocations whose record their owner took back, freeing
  // them (see "Rolled-back pairs"); only the owner writes it.
  std::atomic<uint64_t> rolled_back;
  alignas(64) std::atomic<uint64_t> tail;  // next unread word (reader)
  // A writer waiting for room (exact mode) sets `waiting` and sleeps on the
  // futex word `wake`; the reader, after moving the tail, bumps `wake` and
  // wakes it. (A shared futex: reader and writer are different processes.)
  std::atomic<uint32_t> wake;
  std::atomic<uint32_t> waiting;
  // Lanes 1..: how far the reader has looked (the furthest head it read;
  // UINT64_MAX while it reads the head). The owner never writes a word
  // below it again (see "Rolled-back pairs").
  std::atomic<uint64_t> seen;
  // Lanes 1..: the owner's rolled_back count as of the reader's last batch
  // the server made durable (a reader that does not resume: last read), so
  // that a restarted reader counts each rolled-back pair once.
  std::atomic<uint64_t> rolled_back_sent;
};
static_assert(sizeof(LaneDesc) == 128);

static_assert(sizeof(RingHeader) <= kHeaderBytes - 64);

// The stream key: a secret the forwarder that first read the ring puts
// there (the agent never writes it) and sends in every hello of the
// process's stream; cgoheapd lets only a hello with the same key continue
// the stream. A restarted forwarder reads it back; a stranger on the network
// does not have it. At a fixed place at the end of the header, so that the
// fields above keep their offsets.
inline constexpr size_t kStreamKeyOffset = kHeaderBytes - 64;
inline std::atomic<uint64_t>* StreamKey(RingHeader* h) {
  return reinterpret_cast<std::atomic<uint64_t>*>(reinterpret_cast<char*>(h) + kStreamKeyOffset);
}
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// A record's key on the TSC clock. RDTSCP waits until every earlier
// instruction has executed (and earlier loads are done), so the key of a free
// is read after the load that learnt the address (never before the key of
// the allocation that returned it, on whichever thread), and the key of an
// allocation after the allocator took the block (never before the key of
// the free that gave it back).
inline uint64_t TscRecordKey() {
  unsigned aux;
  return __rdtscp(&aux);
}

inline LaneDesc* Lanes(RingHeader* h) {
  return reinterpret_cast<LaneDesc*>(reinterpret_cast<char*>(h) + kHeaderBytes);
}
inline uint64_t* LaneWords(RingHeader* h, uint32_t lane) {
  char* base = reinterpret_cast<char*>(h) + kHeaderBytes + size_t{h->lane_count} * sizeof(LaneDesc);
  return reinterpret_cast<uint64_t*>(base) + size_t{lane} * h->lane_words;
}

inline size_t RingFileBytes(uint32_t lane_count, uint64_t lane_words) {
  return kHeaderBytes + size_t{lane_count} * (sizeof(LaneDesc) + lane_words * sizeof(uint64_t));
}

}  // namespace cgoheap::ring
