#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "cgoheap.grpc.pb.h"

#include "agent/ring.h"
#include "agent/ring_writer.h"
#include "client/fault_guard.h"
#include "client/forwarder.h"
#include "client/ring_reader.h"
#include "server/server.h"
#include "symbolize/elf_image.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

// Waits until done() holds, for at most limit; false if it never did. Every
// loop here that waits for the code under test goes through this, so that a
// regression fails in seconds instead of hanging until ctest's timeout.
template <typename F>
bool WaitFor(F done, std::chrono::seconds limit = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

struct TestRing {
  ring::RingHeader* h = nullptr;
  size_t bytes = 0;
  std::string path;
  ~TestRing() {
    if (h != nullptr) munmap(h, bytes);
  }
};

// Creates a ring file the way the agent does (header, then the magic).
void MakeRing(const std::string& dir, uint32_t lanes, uint64_t words, uint64_t sample_bytes,
              ring::Clock clock, TestRing* out) {
  out->path = dir + "/1-1.ring";
  out->bytes = ring::RingFileBytes(lanes, words);
  int fd = open(out->path.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, out->bytes), 0);
  void* p = mmap(nullptr, out->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(p, MAP_FAILED);
  auto* h = static_cast<ring::RingHeader*>(p);
  h->version = ring::kVersion;
  h->header_bytes = ring::kHeaderBytes;
  h->lane_words = words;
  h->lane_count = lanes;
  h->clock = static_cast<uint32_t>(clock);
  h->lanes_used.store(1);
  h->pid = 1;
  h->sample_bytes = sample_bytes;
  h->magic = ring::kMagic;
  out->h = h;
}

void Record(uint64_t* words, ring::Kind kind, uint64_t address, uint64_t size, unsigned nframes) {
  words[0] = ring::EncodeHeader(kind, kind == ring::Kind::kFree ? ring::Api::kFree : ring::Api::kMalloc,
                                nframes, ring::kRecordFixedWords + nframes);
  words[2] = address;
  words[3] = size;
  for (unsigned f = 0; f < nframes; ++f) words[4 + f] = address + f;
}

// Every thread's records arrive complete and in that thread's order, whether
// threads have lanes of their own or (more threads than lanes) share lane 0.
// (Keys need not rise across threads: a thread preempted between reading its
// key and publishing delivers late; the ordering that matters is tested by
// HandOver below.)
void ManyWriters(uint32_t lanes, int threads_n, ring::Clock clock) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), lanes, 1 << 10, 0, clock, &r);  // small: wraps many times
  ring::RingWriter writer;
  writer.Reset(r.h, 10'000'000'000, nullptr, nullptr);
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));  // one mapping: see RingReader::Attach
  constexpr int kPerThread = 30000;
  // Writers count what they could not publish and stop when told: the
  // assertions are in this thread, and a failing reader never leaves them
  // waiting for room.
  std::atomic<bool> go{false}, stop{false};
  std::atomic<int> not_published{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < threads_n; ++t) {
    threads.emplace_back([&, t] {
      ring::ThreadLane lane{};
      while (!go.load() && !stop.load()) std::this_thread::yield();
      for (int i = 0; i < kPerThread && !stop.load(); ++i) {
        uint64_t words[ring::kRecordFixedWords + 5];
        unsigned nframes = i % 5;
        Record(words, ring::Kind::kAlloc, (uint64_t(t) << 32) | i, i, nframes);
        if (!writer.Publish(&lane, words, ring::kRecordFixedWords + nframes, i)) ++not_published;
      }
    });
  }
  go = true;
  std::vector<int> next(threads_n, 0);
  int total = 0;
  std::vector<uint64_t> last_key(threads_n, 0);
  std::set<uint32_t> lanes_seen;
  client::RingRecord rec;
  // Checks one record; false (with the failure recorded) on the first wrong one.
  auto check = [&](const client::RingRecord& rec) {
    int t = static_cast<int>(rec.address >> 32), i = static_cast<int>(rec.address & 0xffffffff);
    if (t >= threads_n || i != next[t] || rec.size != static_cast<uint64_t>(i) ||
        rec.nframes != i % 5) {
      ADD_FAILURE() << "thread " << t << " record " << i << " (expected " << next[t]
                    << "), size " << rec.size << ", " << rec.nframes << " frames";
      return false;
    }
    for (int f = 0; f < rec.nframes; ++f) {
      if (rec.frames[f] != rec.address + f) {
        ADD_FAILURE() << "thread " << t << " record " << i << ": frame " << f << " is wrong";
        return false;
      }
    }
    // Lane 0's keys are read after reserving: only own lanes keep them rising.
    if (rec.lane != 0 && rec.key < last_key[t]) {
      ADD_FAILURE() << "thread " << t << " record " << i << ": key went back";
      return false;
    }
    last_key[t] = rec.key;
    lanes_seen.insert(rec.lane);
    ++next[t];
    ++total;
    return true;
  };
  bool ok = WaitFor([&] {
    while (reader.Next(&rec)) {
      if (!check(rec)) return true;
    }
    reader.Release();
    return total == threads_n * kPerThread || (reader.damage() != nullptr);
  });
  stop = true;
  threads.clear();
  EXPECT_TRUE(ok) << "only " << total << " of " << threads_n * kPerThread << " records in 30 s";
  EXPECT_EQ(total, threads_n * kPerThread);
  EXPECT_FALSE((reader.damage() != nullptr));
  EXPECT_EQ(not_published.load(), 0);
  EXPECT_EQ(r.h->dropped_events.load(), 0u);
  EXPECT_EQ(reader.Uncommitted(), 0u);
  EXPECT_FALSE(reader.Next(&rec));
  if (static_cast<int>(lanes) > threads_n) {
    EXPECT_EQ(lanes_seen.count(0), 0u) << "every thread had a lane of its own";
    EXPECT_EQ(lanes_seen.size(), static_cast<size_t>(threads_n));
  } else {
    EXPECT_EQ(lanes_seen.count(0), 1u) << "some threads shared lane 0";
  }
}

TEST(RingTest, OwnLanesLoseNothingAndKeepPerThreadOrder) { ManyWriters(8, 4, ring::Clock::kTsc); }
TEST(RingTest, MoreThreadsThanLanesShareLaneZero) { ManyWriters(3, 6, ring::Clock::kTsc); }
TEST(RingTest, CounterClockWorksToo) { ManyWriters(3, 4, ring::Clock::kCounter); }
TEST(RingTest, StripeClocksKeepPerThreadOrder) { ManyWriters(8, 4, ring::Clock::kStripes); }
TEST(RingTest, StripeClocksInTheSharedLane) { ManyWriters(3, 6, ring::Clock::kStripes); }
// More lanes ready at once than the reader scans (RingReader::kScanLanes): a heap.
TEST(RingTest, ManyLanesReadyAtOnceAreMergedInOrder) { ManyWriters(24, 24, ring::Clock::kTsc); }

// The order that matters across threads: an address allocated on one thread,
// handed over, freed on another, and allocated again on a third. The merged
// stream must show every address as alloc, free, alloc, free... never a free
// of an address that is not allocated, and never two allocations of a live
// one, although the lanes are drained independently.
void HandOver(ring::Clock clock, uint32_t lanes = 8) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), lanes, 1 << 12, 0, clock, &r);
  ring::RingWriter writer;
  writer.Reset(r.h, 10'000'000'000, nullptr, nullptr);
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  constexpr int kAddresses = 64, kHops = 600;
  // An address hops from thread to thread: a hop frees it (except the first)
  // and allocates it again, then hands it to the next thread (t + 1) % 3.
  // Mailbox values: address | hop + 1 (the low 12 bits).
  std::vector<std::atomic<uint64_t>> mailbox(3 * kAddresses);
  for (auto& m : mailbox) m.store(0);
  for (int a = 0; a < kAddresses; ++a) mailbox[a].store(uint64_t(a + 1) << 12 | 1);
  std::atomic<int> finished{0}, done{0}, not_published{0};
  std::atomic<bool> stop{false};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      ring::ThreadLane lane{};
      uint64_t words[ring::kRecordFixedWords];
      while (finished.load() < kAddresses && !stop.load()) {
        for (int a = 0; a < kAddresses; ++a) {
          uint64_t v = mailbox[t * kAddresses + a].load(std::memory_order_acquire);
          if (v == 0) continue;
          mailbox[t * kAddresses + a].store(0, std::memory_order_relaxed);
          uint64_t address = v & ~uint64_t{0xfff};
          int hop = static_cast<int>(v & 0xfff) - 1;
          if (hop > 0) {
            Record(words, ring::Kind::kFree, address, 0, 0);
            if (!writer.Publish(&lane, words, ring::kRecordFixedWords, 0)) ++not_published;
          }
          Record(words, ring::Kind::kAlloc, address, 8, 0);
          if (!writer.Publish(&lane, words, ring::kRecordFixedWords, 8)) ++not_published;
          if (hop + 1 == kHops) {
            finished.fetch_add(1);
          } else {
            mailbox[((t + 1) % 3) * kAddresses + a].store(address | (hop + 2),
                                                          std::memory_order_release);
          }
        }
      }
      done.fetch_add(1);
    });
  }
  std::map<uint64_t, bool> live;
  client::RingRecord rec;
  uint64_t events = 0;
  bool wrong = false;
  bool ok = WaitFor([&] {
    bool finished = done.load() == 3;
    while (!wrong && reader.Next(&rec)) {
      bool& is_live = live[rec.address];
      if (rec.kind == ring::Kind::kAlloc && is_live) {
        ADD_FAILURE() << "allocated twice without a free: " << std::hex << rec.address;
        wrong = true;
      } else if (rec.kind == ring::Kind::kFree && !is_live) {
        ADD_FAILURE() << "freed before it was allocated: " << std::hex << rec.address;
        wrong = true;
      }
      is_live = rec.kind == ring::Kind::kAlloc;
      ++events;
    }
    reader.Release();
    return finished || wrong;
  });
  stop = true;
  threads.clear();
  EXPECT_TRUE(ok) << "the writers did not finish in 30 s";
  EXPECT_EQ(not_published.load(), 0);
  while (reader.Next(&rec)) ++events;
  EXPECT_EQ(live.size(), static_cast<size_t>(kAddresses));
  EXPECT_EQ(events, uint64_t{kAddresses} * (2 * kHops - 1));
  for (const auto& [address, is_live] : live) EXPECT_TRUE(is_live) << address;
  EXPECT_EQ(r.h->dropped_events.load(), 0u);
}

TEST(RingTest, HandedOverBlocksAreNeverFreedBeforeAllocatedTsc) { HandOver(ring::Clock::kTsc); }
TEST(RingTest, HandedOverBlocksAreNeverFreedBeforeAllocatedCounter) {
  HandOver(ring::Clock::kCounter);
}
TEST(RingTest, HandedOverBlocksAreNeverFreedBeforeAllocatedStripes) {
  HandOver(ring::Clock::kStripes);
}
// Two lanes: one thread has its own, two share lane 0 (keys with positions
// by CMPXCHG16B).
TEST(RingTest, HandedOverThroughTheSharedLaneStripes) { HandOver(ring::Clock::kStripes, 2); }
TEST(RingTest, HandedOverThroughTheSharedLaneTsc) { HandOver(ring::Clock::kTsc, 2); }

// The agent's two hooks in exact mode, as agent.cc writes them: an
// allocation's record, and a free that cancels its allocation or is
// published. False: not published (the lane was full).
bool AllocEvent(ring::RingWriter& writer, ring::ThreadLane* tl, uint64_t address,
                unsigned nframes) {
  uint64_t words[ring::kRecordFixedWords + 4];
  Record(words, ring::Kind::kAlloc, address, 16, nframes);
  return writer.PublishAlloc(tl, words, ring::kRecordFixedWords + nframes, 16);
}
bool FreeEvent(ring::RingWriter& writer, ring::ThreadLane* tl, uint64_t address) {
  if (writer.CancelAlloc(tl, address)) return true;
  uint64_t words[ring::kRecordFixedWords];
  Record(words, ring::Kind::kFree, address, 0, 0);
  return writer.Publish(tl, words, ring::kRecordFixedWords, 0);
}

// A ring in exact mode on the stripes path (the one where frees cancel),
// with its writer; the reader attaches when the test is ready.
struct CancellingRing {
  testing::TempDir dir;
  TestRing r;
  ring::RingWriter writer;
  client::RingReader reader;
  CancellingRing(uint32_t lanes, uint64_t words) {
    MakeRing(dir.path(), lanes, words, 0, ring::Clock::kStripes, &r);
    writer.Reset(r.h, 10'000'000'000, nullptr, nullptr);
  }
  bool Attach() { return reader.Attach(r.h, r.bytes); }
};

// Cancelled pairs (ring.h): a block freed by the thread that allocated it,
// before the reader read the allocation, leaves no record, and is counted.
TEST(RingTest, FreedByItsThreadBeforeItWasReadLeavesNoRecord) {
  CancellingRing cr(4, 1 << 10);
  ring::RingWriter& writer = cr.writer;
  client::RingReader& reader = cr.reader;
  ring::ThreadLane lane{};
  for (uint64_t a : {0x1000, 0x2000, 0x3000}) ASSERT_TRUE(AllocEvent(writer, &lane, a, 3));
  ASSERT_NE(lane.lane, 0u);
  EXPECT_TRUE(writer.CancelAlloc(&lane, 0x2000));
  EXPECT_FALSE(writer.CancelAlloc(&lane, 0x2000)) << "cancelled twice";
  EXPECT_FALSE(writer.CancelAlloc(&lane, 0x4000)) << "never allocated";
  ASSERT_TRUE(cr.Attach());
  client::RingRecord rec;
  std::vector<uint64_t> read;
  while (reader.Next(&rec)) read.push_back(rec.address);
  EXPECT_EQ(read, (std::vector<uint64_t>{0x1000, 0x3000}));
  EXPECT_EQ(reader.cancelled(), 1u);
  // Read now: their frees are records of their own.
  EXPECT_FALSE(writer.CancelAlloc(&lane, 0x1000));
  EXPECT_FALSE(writer.CancelAlloc(&lane, 0x3000));
  const uint64_t* lane_words = ring::LaneWords(cr.r.h, lane.lane);
  const unsigned record = ring::kRecordFixedWords + 3;
  EXPECT_EQ(ring::HeaderKind(lane_words[0]), ring::Kind::kTaken);
  EXPECT_EQ(ring::HeaderKind(lane_words[record]), ring::Kind::kCancelled);
  EXPECT_EQ(ring::HeaderKind(lane_words[2 * record]), ring::Kind::kTaken);
}

// Rolled-back pairs (ring.h): the newest allocation of a lane, freed by
// its thread before the reader looked at the lane, is taken back whole: the
// head goes back, the next record is written where it was, and the pair is
// counted all the same.
TEST(RingTest, TheNewestAllocationFreedBeforeTheReaderLookedIsTakenBack) {
  CancellingRing cr(4, 1 << 10);
  ring::RingWriter& writer = cr.writer;
  client::RingReader& reader = cr.reader;
  ASSERT_TRUE(cr.Attach());  // before the lane is claimed: all its pairs are this reader's
  ring::ThreadLane lane{};
  ASSERT_TRUE(AllocEvent(writer, &lane, 0x1000, 2));
  ASSERT_NE(lane.lane, 0u);
  ring::LaneDesc& desc = ring::Lanes(cr.r.h)[lane.lane];
  const uint64_t start = desc.head.load();
  for (uint64_t a : {0x2000, 0x3000}) ASSERT_TRUE(AllocEvent(writer, &lane, a, 3));
  // Newest first, as a thread frees what it has just allocated.
  EXPECT_TRUE(writer.CancelAlloc(&lane, 0x3000));
  EXPECT_TRUE(writer.CancelAlloc(&lane, 0x2000));
  EXPECT_EQ(desc.head.load(), start);
  EXPECT_EQ(desc.rolled_back.load(), 2u);
  ASSERT_TRUE(AllocEvent(writer, &lane, 0x4000, 0));
  EXPECT_EQ(desc.head.load(), start + ring::kRecordFixedWords) << "not written where 0x2000 was";
  client::RingRecord rec;
  std::vector<uint64_t> read;
  while (reader.Next(&rec)) read.push_back(rec.address);
  EXPECT_EQ(read, (std::vector<uint64_t>{0x1000, 0x4000}));
  EXPECT_EQ(reader.cancelled(), 2u);
  // The two records read and nothing else: the pairs taken back used no space.
  EXPECT_EQ(reader.words_read(), 2 * ring::kRecordFixedWords + 2);
  EXPECT_EQ(reader.damage(), nullptr);
}

// A thread that holds a few blocks at a time and frees each before the
// reader looks takes nearly every pair back, whatever the blocks'
// addresses. Two blocks live at once: a table of one slot per hash, as
// there was, took back 98.5% of such pairs (the older block's free found
// its slot taken); what is left now is two blocks on one stripe of
// addresses (the newer allocation raised it past the older's key), once in
// 4096. Three at a time (the churn benchmark's loop): one slot per hash
// took back 95.8%.
TEST(RingTest, BlocksLiveAtTheSameTimeAreTakenBack) {
  CancellingRing cr(4, 1 << 16);
  ring::RingWriter& writer = cr.writer;
  ASSERT_TRUE(cr.Attach());
  ring::ThreadLane lane{};
  uint64_t state = 0x9e3779b97f4a7c15;
  auto address = [&state] {  // 16-byte aligned, in 256 MiB, as a heap's
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return 0x7f0000000000 + ((state >> 20) & 0xffffff) * 16;
  };
  ASSERT_TRUE(AllocEvent(writer, &lane, 0x1000, 1));  // claims the lane
  ring::LaneDesc& desc = ring::Lanes(cr.r.h)[lane.lane];
  // Each round allocates its blocks, frees them newest first, and reads
  // nothing: what was not taken back stays in the lane (and is marked).
  auto rounds = [&](int n, int live) {
    const uint64_t before = desc.rolled_back.load();
    int pairs = 0;
    for (int i = 0; i < n; ++i) {
      uint64_t blocks[3];
      for (int j = 0; j < live; ++j) blocks[j] = address();
      const bool twice = blocks[0] == blocks[1] ||
                         (live == 3 && (blocks[2] == blocks[0] || blocks[2] == blocks[1]));
      if (twice) continue;
      bool published = true;
      for (int j = 0; j < live; ++j) published &= AllocEvent(writer, &lane, blocks[j], 3);
      for (int j = live - 1; j >= 0; --j) published &= FreeEvent(writer, &lane, blocks[j]);
      if (!published) {
        ADD_FAILURE() << "the lane filled after " << pairs << " pairs";
        break;
      }
      pairs += live;
    }
    return std::pair<uint64_t, int>{desc.rolled_back.load() - before, pairs};
  };
  auto [two_back, two] = rounds(20000, 2);
  EXPECT_GE(two_back * 1000, two * 999u) << two_back << " of " << two;
  auto [three_back, three] = rounds(20000, 3);
  EXPECT_GE(three_back * 1000, three * 995u) << three_back << " of " << three;
}

// Once the reader has looked at a lane, the records it saw stay where they
// are: the thread frees one right after the reader's first look, and
// allocates again. The freed allocation is marked and skipped, not taken
// back (else the new record would be written where the reader looks, after
// its first look, and be taken in the same round, ahead of what it may
// depend on).
TEST(RingTest, AnAllocationTheReaderLookedAtIsNeverTakenBack) {
  CancellingRing cr(4, 1 << 10);
  ASSERT_TRUE(cr.Attach());
  struct Writer {
    ring::RingWriter* writer;
    ring::ThreadLane lane{};
    bool done = false, cancelled = false, published = false;
  } w{&cr.writer};
  ASSERT_TRUE(AllocEvent(cr.writer, &w.lane, 0x1000, 2));
  ring::LaneDesc& desc = ring::Lanes(cr.r.h)[w.lane.lane];
  const uint64_t end = desc.head.load();
  cr.reader.SetRoundHookForTest(
      [](uint32_t lane, void* arg) {
        auto* w = static_cast<Writer*>(arg);
        if (lane != w->lane.lane || w->done) return;
        w->done = true;
        w->cancelled = w->writer->CancelAlloc(&w->lane, 0x1000);
        w->published = AllocEvent(*w->writer, &w->lane, 0x2000, 0);
      },
      &w);
  client::RingRecord recs[8];
  EXPECT_EQ(cr.reader.NextMany(recs, 8), 0u) << "0x2000 came after the first look: next round";
  ASSERT_TRUE(w.done);
  EXPECT_TRUE(w.cancelled);
  EXPECT_TRUE(w.published);
  EXPECT_EQ(desc.rolled_back.load(), 0u);
  EXPECT_EQ(desc.head.load(), end + ring::kRecordFixedWords) << "written over 0x1000";
  EXPECT_EQ(cr.reader.words_read(), ring::kRecordFixedWords + 2) << "0x1000 not skipped";
  ASSERT_EQ(cr.reader.NextMany(recs, 8), 1u);
  EXPECT_EQ(recs[0].address, 0x2000u);
  EXPECT_EQ(cr.reader.words_read(), 2 * ring::kRecordFixedWords + 2);
  EXPECT_EQ(cr.reader.cancelled(), 1u);
  EXPECT_EQ(cr.reader.damage(), nullptr);
}

// The reader checked the next record (it is ready to be taken), then its
// thread freed it: the copy the reader then takes is dropped, not reported
// as an allocation whose free never comes.
TEST(RingTest, CancelledAfterTheReaderCheckedItIsDropped) {
  CancellingRing cr(4, 1 << 10);
  ring::RingWriter& writer = cr.writer;
  client::RingReader& reader = cr.reader;
  ring::ThreadLane lane{};
  for (uint64_t a : {0x1000, 0x2000, 0x3000}) ASSERT_TRUE(AllocEvent(writer, &lane, a, 1));
  ASSERT_TRUE(cr.Attach());
  client::RingRecord rec;
  ASSERT_TRUE(reader.Next(&rec));  // 0x1000; 0x2000 is now checked and ready
  EXPECT_EQ(rec.address, 0x1000u);
  EXPECT_TRUE(writer.CancelAlloc(&lane, 0x2000));
  ASSERT_TRUE(reader.Next(&rec));
  EXPECT_EQ(rec.address, 0x3000u);
  EXPECT_FALSE(reader.Next(&rec));
  EXPECT_EQ(reader.cancelled(), 1u);
}

// A thread's record of an allocation is no longer its block once another
// thread freed the block and the allocator gave the address out again: the
// first thread's later free of the address is the new block's, and is
// published (the address's stripe moved on).
TEST(RingTest, AnAllocationFreedElsewhereIsNeverCancelled) {
  CancellingRing cr(4, 1 << 10);
  ring::RingWriter& writer = cr.writer;
  client::RingReader& reader = cr.reader;
  ring::ThreadLane a{}, b{}, c{};
  ASSERT_TRUE(AllocEvent(writer, &a, 0x5000, 0));  // a's, handed to b
  ASSERT_TRUE(FreeEvent(writer, &b, 0x5000));
  ASSERT_TRUE(AllocEvent(writer, &c, 0x5000, 0));  // the same address again, handed to a
  ASSERT_TRUE(FreeEvent(writer, &a, 0x5000));
  ASSERT_TRUE(cr.Attach());
  client::RingRecord rec;
  std::string kinds;
  while (reader.Next(&rec)) kinds += rec.kind == ring::Kind::kAlloc ? 'A' : 'F';
  EXPECT_EQ(kinds, "AFAF");
  EXPECT_EQ(reader.cancelled(), 0u);
}

// Threads allocate and free blocks of their own while the reader reads
// (some of those frees cancel, some come after the reader took the
// allocation), and hand blocks to each other. Every allocation is read or
// counted as cancelled, every free of a read allocation is read after it,
// and nothing is left live.
TEST(RingTest, CancellingWhileTheReaderReadsLosesNothing) {
  CancellingRing cr(8, 1 << 12);
  ring::RingWriter& writer = cr.writer;
  client::RingReader& reader = cr.reader;
  ASSERT_TRUE(cr.Attach());
  constexpr int kThreads = 3, kIterations = 400000;
  std::atomic<int> done{0}, not_published{0};
  std::atomic<bool> stop{false};
  // A block handed from thread t to thread t + 1 (0: none).
  std::vector<std::atomic<uint64_t>> handed(kThreads);
  for (auto& h : handed) h.store(0);
  std::atomic<uint64_t> allocs{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ring::ThreadLane lane{};
      auto alloc = [&](uint64_t address) {
        if (!AllocEvent(writer, &lane, address, 2)) ++not_published;
        allocs.fetch_add(1, std::memory_order_relaxed);
      };
      auto free_ = [&](uint64_t address) {
        if (!FreeEvent(writer, &lane, address)) ++not_published;
      };
      for (int i = 0; i < kIterations && !stop.load(); ++i) {
        const uint64_t mine = (uint64_t(t + 1) << 40) | (uint64_t(i % 7) << 4);
        alloc(mine);
        alloc(mine + 0x1000);
        free_(mine + 0x1000);
        if (i % 3 == 0) std::this_thread::yield();  // let the reader in between
        free_(mine);
        // Every 16th iteration a block goes to the next thread, which frees it.
        // Its address is new each time: a finished thread may leave it live.
        if (i % 16 == 0) {
          const uint64_t gift = (uint64_t(t + 1) << 40) | (uint64_t(1) << 32) | uint64_t(i) << 4;
          alloc(gift);
          uint64_t expected = 0;
          // (The next thread has not taken the last one yet: this one stays.)
          if (!handed[(t + 1) % kThreads].compare_exchange_strong(expected, gift)) free_(gift);
        }
        if (uint64_t got = handed[t].exchange(0); got != 0) free_(got);
      }
      done.fetch_add(1);
    });
  }
  std::map<uint64_t, bool> live;
  uint64_t allocs_read = 0;
  bool wrong = false;
  client::RingRecord recs[64];
  auto drain = [&] {
    for (size_t n; !wrong && (n = reader.NextMany(recs, 64)) > 0;) {
      for (size_t i = 0; i < n && !wrong; ++i) {
        bool& is_live = live[recs[i].address];
        if (recs[i].kind == ring::Kind::kAlloc) {
          if (is_live) {
            ADD_FAILURE() << "allocated twice without a free: " << std::hex << recs[i].address;
            wrong = true;
          }
          is_live = true;
          ++allocs_read;
        } else {
          if (!is_live) {
            ADD_FAILURE() << "freed, but its allocation was not read: " << std::hex
                          << recs[i].address;
            wrong = true;
          }
          is_live = false;
        }
      }
    }
    reader.Release();
  };
  // The writers yield often, and on a loaded machine a yield gives the core
  // away for a whole slice: they get 5 s of work (some 0.5 s alone), then are
  // stopped wherever they are. What the test checks holds for any prefix.
  const auto budget = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool ok = WaitFor([&] {
    bool finished = done.load() == kThreads;
    drain();
    if (std::chrono::steady_clock::now() > budget) stop = true;
    return finished || wrong;
  });
  stop = true;
  threads.clear();
  EXPECT_TRUE(ok) << "the writers did not stop in 30 s: one is stuck";
  // Blocks handed over and never taken are the only ones left live.
  std::set<uint64_t> still_handed;
  for (auto& h : handed) {
    if (uint64_t v = h.load(); v != 0) still_handed.insert(v);
  }
  drain();
  EXPECT_EQ(not_published.load(), 0);
  EXPECT_EQ(allocs_read + reader.cancelled(), allocs.load());
  EXPECT_GT(reader.cancelled(), 0u) << "no free ever came before the reader";
  EXPECT_GT(allocs_read, 0u);
  for (const auto& [address, is_live] : live) {
    if (is_live) {
      EXPECT_TRUE(still_handed.count(address)) << std::hex << address << " left live";
    }
  }
}

// Writers that publish while the reader looks: right after the reader's
// first look at lane `at` in a round, X is allocated with one thread's lane
// state and then freed with the other's. A has lane 1 before the reader
// starts; B has lane 2 too, or (b_claims_late) claims it inside the hook.
// The kinds read over three rounds must be the allocation, then the free.
struct LookCtx {
  ring::RingWriter writer;
  ring::ThreadLane a{}, b{};
  ring::ThreadLane* allocates = nullptr;
  ring::ThreadLane* frees = nullptr;
  uint32_t at = 0;
  bool fired = false;
};

void WritesDuringTheLook(ring::Clock clock, uint32_t at, bool b_claims_late, bool b_allocates) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 4, 1 << 8, 0, clock, &r);
  LookCtx ctx;
  ctx.at = at;
  ctx.allocates = b_allocates ? &ctx.b : &ctx.a;
  ctx.frees = b_allocates ? &ctx.a : &ctx.b;
  ctx.writer.Reset(r.h, 1'000'000'000, nullptr, nullptr);
  uint64_t words[ring::kRecordFixedWords];
  Record(words, ring::Kind::kFree, 0x100, 0, 0);
  ASSERT_TRUE(ctx.writer.Publish(&ctx.a, words, 4, 0));
  ASSERT_EQ(ctx.a.lane, 1u);
  if (!b_claims_late) {
    ASSERT_TRUE(ctx.writer.Publish(&ctx.b, words, 4, 0));
    ASSERT_EQ(ctx.b.lane, 2u);
  }
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  client::RingRecord rec;
  while (reader.Next(&rec)) {
  }
  reader.SetRoundHookForTest(
      [](uint32_t lane, void* arg) {
        auto* c = static_cast<LookCtx*>(arg);
        if (lane != c->at || c->fired) return;
        c->fired = true;
        uint64_t w[ring::kRecordFixedWords];
        Record(w, ring::Kind::kAlloc, 0x5000, 8, 0);
        c->writer.Publish(c->allocates, w, 4, 8);
        Record(w, ring::Kind::kFree, 0x5000, 0, 0);
        c->writer.Publish(c->frees, w, 4, 0);
      },
      &ctx);
  std::vector<ring::Kind> order;
  for (int round = 0; round < 3; ++round) {
    while (reader.Next(&rec)) order.push_back(rec.kind);
  }
  ASSERT_TRUE(ctx.fired);
  ASSERT_EQ(ctx.b.lane, 2u);
  EXPECT_EQ(order, (std::vector<ring::Kind>{ring::Kind::kAlloc, ring::Kind::kFree}));
}

// The race the two looks exist for, made deterministic: the reader has read lane
// 1's head (empty) when thread A allocates X in lane 1 and thread B frees X in
// lane 2; then the reader reads lane 2's head. Taking lane 2's free in this
// round would put it before its allocation.
void PublishedBetweenHeads(ring::Clock clock) {
  WritesDuringTheLook(clock, /*at=*/1, /*b_claims_late=*/false, /*b_allocates=*/false);
}

TEST(RingTest, EventsPublishedWhileTheReaderLooksWaitForTheNextRoundTsc) {
  PublishedBetweenHeads(ring::Clock::kTsc);
}
TEST(RingTest, EventsPublishedWhileTheReaderLooksWaitForTheNextRoundCounter) {
  PublishedBetweenHeads(ring::Clock::kCounter);
}
TEST(RingTest, EventsPublishedWhileTheReaderLooksWaitForTheNextRoundStripes) {
  PublishedBetweenHeads(ring::Clock::kStripes);
}

// A lane claimed while the reader looks: thread B takes a lane of its own
// and allocates X in it after the reader began its round, then thread A
// (lane 1) frees X before the reader looks at lane 1. A's free may be taken
// this round only if B's lane is looked at too, and B's allocation first.
void LaneClaimedBetweenLooks(ring::Clock clock) {
  WritesDuringTheLook(clock, /*at=*/0, /*b_claims_late=*/true, /*b_allocates=*/true);
}

TEST(RingTest, LaneClaimedWhileTheReaderLooksIsSeenFirstStripes) {
  LaneClaimedBetweenLooks(ring::Clock::kStripes);
}
TEST(RingTest, LaneClaimedWhileTheReaderLooksIsSeenFirstTsc) {
  LaneClaimedBetweenLooks(ring::Clock::kTsc);
}
TEST(RingTest, LaneClaimedWhileTheReaderLooksIsSeenFirstCounter) {
  LaneClaimedBetweenLooks(ring::Clock::kCounter);
}

// Lane 0 is published as it is reserved: a writer still writing its record
// hides the records behind it. Here thread C's free of X sits behind such a
// record while thread A's allocation of X (reusing the address) is ready in
// lane 1: the reader must wait for the unfinished record rather than merge
// the allocation ahead of the free it depends on.
TEST(RingTest, UnfinishedRecordInTheSharedLaneHoldsBackLaterKeys) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 8, 0, ring::Clock::kTsc, &r);
  ring::RingWriter writer;
  writer.Reset(r.h, 1'000'000'000, nullptr, nullptr);
  ring::ThreadLane a{}, c{};
  c.exiting = true;  // never claims a lane: writes lane 0
  uint64_t words[ring::kRecordFixedWords];
  Record(words, ring::Kind::kAlloc, 0x10, 8, 0);  // A claims lane 1
  ASSERT_TRUE(writer.Publish(&a, words, 4, 8));
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  client::RingRecord rec;
  ASSERT_TRUE(reader.Next(&rec));
  ASSERT_FALSE(reader.Next(&rec));
  // W reserves lane 0's next record and is preempted before writing it.
  ring::LaneDesc& lane0 = ring::Lanes(r.h)[0];
  uint64_t w_pos = lane0.head.fetch_add(4);
  uint64_t w_key = ring::TscRecordKey();
  Record(words, ring::Kind::kFree, 0x5000, 0, 0);  // C frees X, behind W
  ASSERT_TRUE(writer.Publish(&c, words, 4, 0));
  Record(words, ring::Kind::kAlloc, 0x5000, 8, 0);  // A allocates X again
  ASSERT_TRUE(writer.Publish(&a, words, 4, 8));
  EXPECT_FALSE(reader.Next(&rec)) << "nothing may pass the unfinished record";
  // W finishes.
  uint64_t* l0 = ring::LaneWords(r.h, 0);
  const uint64_t cap = r.h->lane_words;
  l0[(w_pos + 1) & (cap - 1)] = w_key;
  l0[(w_pos + 2) & (cap - 1)] = 0x77;
  l0[(w_pos + 3) & (cap - 1)] = 8;
  std::atomic_ref<uint64_t>(l0[w_pos & (cap - 1)])
      .store(ring::WithLap(ring::EncodeHeader(ring::Kind::kAlloc, ring::Api::kMalloc, 0, 4),
                           w_pos, cap),
             std::memory_order_release);
  std::vector<std::pair<ring::Kind, uint64_t>> order;
  while (reader.Next(&rec)) order.push_back({rec.kind, rec.address});
  EXPECT_EQ(order, (std::vector<std::pair<ring::Kind, uint64_t>>{{ring::Kind::kAlloc, 0x77},
                                                                  {ring::Kind::kFree, 0x5000},
                                                                  {ring::Kind::kAlloc, 0x5000}}));
}

// When the process is gone, a record that will never be finished holds
// nothing back: the other lanes are read to the end.
TEST(RingTest, TornRecordOfADeadProcessHoldsNothingBack) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 8, 0, ring::Clock::kTsc, &r);
  ring::RingWriter writer;
  writer.Reset(r.h, 1'000'000'000, nullptr, nullptr);
  ring::ThreadLane a{};
  uint64_t words[ring::kRecordFixedWords];
  Record(words, ring::Kind::kAlloc, 0x10, 8, 0);
  ASSERT_TRUE(writer.Publish(&a, words, 4, 8));
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  client::RingRecord rec;
  ASSERT_TRUE(reader.Next(&rec));
  ring::Lanes(r.h)[0].head.fetch_add(4);  // reserved, never written
  Record(words, ring::Kind::kAlloc, 0x20, 8, 0);
  ASSERT_TRUE(writer.Publish(&a, words, 4, 8));
  EXPECT_FALSE(reader.Next(&rec));
  reader.WritersGone();
  ASSERT_TRUE(reader.Next(&rec));
  EXPECT_EQ(rec.address, 0x20u);
  EXPECT_EQ(reader.Uncommitted(), 4u);
}

// A ring with one lane of its own for the test's writer (64 words: 16 free
// records of 4 words fill it), as the tests of full lanes need.
struct SmallRing {
  SmallRing(uint64_t sample_bytes, uint64_t full_wait_ns) {
    MakeRing(dir.path(), 2, 64, sample_bytes, ring::Clock::kTsc, &r);
    writer.Reset(r.h, full_wait_ns, nullptr, nullptr);
  }
  // Publishes one record of kind at address (size for allocations).
  bool Put(ring::Kind kind, uint64_t address, uint64_t size = 0) {
    uint64_t words[ring::kRecordFixedWords];
    Record(words, kind, address, size, 0);
    return writer.Publish(&lane, words, ring::kRecordFixedWords, size);
  }
  static constexpr int kRecordsThatFit = 64 / ring::kRecordFixedWords;

  testing::TempDir dir;
  TestRing r;
  ring::RingWriter writer;
  ring::ThreadLane lane{};
};

TEST(RingTest, FullLaneDropsAndCountsInsteadOfBlocking) {
  SmallRing t(/*sample_bytes=*/524288, 30'000'000'000);
  int written = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) written += t.Put(ring::Kind::kAlloc, 1, 10);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10))
      << "a sampled allocation never waits for room";
  EXPECT_EQ(t.lane.lane, 1u);
  EXPECT_EQ(written, SmallRing::kRecordsThatFit);
  EXPECT_EQ(t.r.h->dropped_events.load(), 100u - SmallRing::kRecordsThatFit);
  EXPECT_EQ(t.r.h->dropped_bytes.load(), (100u - SmallRing::kRecordsThatFit) * 10);
}

// A sampled process waits to record a free (dropping it would show a freed
// block as leaked), and writes it once the reader makes room; so does an
// exact process for any record.
void WriterResumesWhenTheReaderMakesRoom(uint64_t sample_bytes) {
  SmallRing t(sample_bytes, 30'000'000'000);
  for (int i = 0; i < SmallRing::kRecordsThatFit; ++i) {
    ASSERT_TRUE(t.Put(ring::Kind::kAlloc, 1, 10));
  }
  std::atomic<bool> written{false}, returned{false};
  auto t0 = std::chrono::steady_clock::now();
  std::jthread blocked([&] {
    written = t.Put(ring::Kind::kFree, 2);
    returned = true;
  });
  // The writer says it waits for room in its lane's control words.
  ring::LaneDesc& desc = ring::Lanes(t.r.h)[1];
  ASSERT_TRUE(WaitFor([&] { return desc.waiting.load() != 0 || returned.load(); },
                      std::chrono::seconds(10)));
  EXPECT_FALSE(returned.load()) << "the lane was full: the writer must wait";
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(t.r.h, t.r.bytes));
  client::RingRecord rec;
  int read = 0;
  while (reader.Next(&rec)) ++read;
  reader.Release();
  EXPECT_EQ(read, SmallRing::kRecordsThatFit);
  blocked.join();
  EXPECT_TRUE(written.load());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  EXPECT_EQ(t.r.h->dropped_events.load(), 0u);
  ASSERT_TRUE(reader.Next(&rec));
  EXPECT_EQ(rec.kind, ring::Kind::kFree);
  EXPECT_EQ(rec.address, 2u);
}

TEST(RingTest, SampledModeWaitsToRecordAFree) { WriterResumesWhenTheReaderMakesRoom(524288); }
TEST(RingTest, ExactModeWriterResumesWhenTheReaderMakesRoom) {
  WriterResumesWhenTheReaderMakesRoom(0);
}

TEST(RingTest, ExactModeWaitsBoundedlyThenDropsAtOnceUntilTheReaderMoves) {
  SmallRing t(0, 20'000'000);  // 20 ms
  for (int i = 0; i < SmallRing::kRecordsThatFit; ++i) ASSERT_TRUE(t.Put(ring::Kind::kFree, 1));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(t.Put(ring::Kind::kFree, 1));  // waits ~20 ms, then drops
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(20));
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(t.Put(ring::Kind::kFree, 1));  // no more waits
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(t.r.h->dropped_events.load(), 1001u);
  client::RingReader reader;
  ASSERT_TRUE(reader.Open(t.r.path));
  client::RingRecord rec;
  int read = 0;
  while (reader.Next(&rec)) ++read;
  reader.Release();
  EXPECT_EQ(read, SmallRing::kRecordsThatFit);
  EXPECT_TRUE(t.Put(ring::Kind::kFree, 1));  // the reader moved: writing resumes
}

// A lane given back by an exiting thread is claimed by the next thread,
// which appends after the records still unread.
TEST(RingTest, ReleasedLaneIsReusedAfterItsUnreadRecords) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 8, 0, ring::Clock::kTsc, &r);
  ring::RingWriter writer;
  static std::vector<uint32_t> claims;
  claims.clear();
  writer.Reset(r.h, 1'000'000'000, nullptr,
               [](uint32_t, uint32_t lane) { claims.push_back(lane); });
  uint64_t words[ring::kRecordFixedWords];
  int published = 0;
  for (int t = 0; t < 3; ++t) {
    std::thread([&, t] {
      ring::ThreadLane lane{};
      for (int i = 0; i < 5; ++i) {
        Record(words, ring::Kind::kAlloc, t * 10 + i, 1, 0);
        published += writer.Publish(&lane, words, 4, 1);
      }
      writer.ReleaseLane(&lane);
      Record(words, ring::Kind::kFree, t * 10, 0, 0);  // after release: the shared lane
      published += writer.Publish(&lane, words, 4, 0);
    }).join();
  }
  EXPECT_EQ(published, 18);
  EXPECT_EQ(claims, (std::vector<uint32_t>{1, 1, 1}));
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  client::RingRecord rec;
  std::vector<uint64_t> order;
  while (reader.Next(&rec)) order.push_back(rec.kind == ring::Kind::kFree ? 1000 + rec.address : rec.address);
  EXPECT_EQ(order, (std::vector<uint64_t>{0, 1, 2, 3, 4, 1000, 10, 11, 12, 13, 14, 1010, 20, 21,
                                          22, 23, 24, 1020}));
}

// A lane whose storage cannot be allocated (a full file system) is never
// written: the thread shares lane 0, and nothing is lost.
TEST(RingTest, LaneWithoutStorageIsNotUsed) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 4, 1 << 8, 0, ring::Clock::kTsc, &r);
  ring::RingWriter writer;
  writer.Reset(r.h, 1'000'000'000, [](uint32_t) { return false; }, nullptr);
  ring::ThreadLane lane{};
  uint64_t words[ring::kRecordFixedWords];
  for (int i = 0; i < 10; ++i) {
    Record(words, ring::Kind::kAlloc, 100 + i, 8, 0);
    ASSERT_TRUE(writer.Publish(&lane, words, 4, 8));
  }
  EXPECT_EQ(lane.lane, 0u);
  for (uint32_t i = 1; i < 4; ++i) EXPECT_EQ(ring::Lanes(r.h)[i].owner.load(), 0u) << i;
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  client::RingRecord rec;
  int read = 0;
  while (reader.Next(&rec)) {
    EXPECT_EQ(rec.lane, 0u);
    EXPECT_EQ(rec.address, 100u + read);
    ++read;
  }
  EXPECT_EQ(read, 10);
}

TEST(RingTest, ReaderRejectsFilesThatAreNotRings) {
  testing::TempDir dir;
  std::string path = dir.path() + "/junk.ring";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_EQ(ftruncate(fd, ring::kHeaderBytes + 4096), 0);
  close(fd);
  client::RingReader reader;
  EXPECT_FALSE(reader.Open(path));
  EXPECT_FALSE(reader.Open(dir.path() + "/missing.ring"));
  TestRing r;
  MakeRing(dir.path(), 2, 64, 0, ring::Clock::kTsc, &r);
  r.h->clock = 7;
  EXPECT_FALSE(reader.Open(r.path));
  r.h->clock = static_cast<uint32_t>(ring::Clock::kTsc);
  r.h->lane_count = 3;  // does not match the file's size
  EXPECT_FALSE(reader.Open(r.path));
  r.h->lane_count = 2;
  EXPECT_TRUE(reader.Open(r.path));
}

// A record whose size field lies (a writer outside the protocol, a damaged
// file): the reader stops and says so, rather than read garbage as events.
TEST(RingTest, DamagedLaneStopsTheReader) {
  SmallRing t(0, 0);
  ASSERT_TRUE(t.Put(ring::Kind::kFree, 1));
  ASSERT_TRUE(t.Put(ring::Kind::kFree, 1));
  uint64_t* w = ring::LaneWords(t.r.h, 1);
  w[4] = ring::WithLap(ring::EncodeHeader(ring::Kind::kAlloc, ring::Api::kMalloc, 9, 4), 4, 64);
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(t.r.h, t.r.bytes));
  client::RingRecord rec;
  EXPECT_TRUE(reader.Next(&rec));
  EXPECT_FALSE(reader.Next(&rec));
  EXPECT_TRUE((reader.damage() != nullptr));
}

// A reader of t's forged ring, on a thread of its own, takes no record and
// says the ring is damaged. One still `doing` after 30 s fails the test and
// ends the process: the reading thread cannot be stopped, nor the ring
// unmapped under it.
void ExpectTheReaderStopsDamaged(SmallRing& t, const char* doing) {
  std::atomic<bool> done{false}, got{true};
  std::thread read([&] {
    client::RingReader reader;
    client::RingRecord rec;
    got = reader.Attach(t.r.h, t.r.bytes) && reader.Next(&rec);
    EXPECT_NE(reader.damage(), nullptr);
    done = true;
  });
  if (!WaitFor([&] { return done.load(); })) {
    ADD_FAILURE() << "the reader is still " << doing << " after 30 s";
    _exit(1);
  }
  read.join();
  EXPECT_FALSE(got);
}

// Lane 0's head and records come from the target. A forged head near 2^63
// over a header that claims two laps of words (the lap is one bit, so that
// header matches its own word again every other lap) must not keep the
// reader walking the lane: it stops at once and says the ring is damaged.
TEST(RingTest, ForgedHeadOverAForgedRecordSizeEndsTheRound) {
  SmallRing t(0, 0);
  uint64_t* w = ring::LaneWords(t.r.h, 0);
  w[0] = ring::WithLap(ring::EncodeHeader(ring::Kind::kFree, ring::Api::kFree, 0, 2 * 64), 0, 64);
  ring::Lanes(t.r.h)[0].head.store(uint64_t{1} << 62);
  t.r.h->lanes_used.store(1);
  ExpectTheReaderStopsDamaged(t, "walking lane 0");
}

// An owned lane's head and records come from the target too. Cancelled
// records whose sizes walk the reader through the lane's words at lap 0
// and through the others at lap 1, so that every header it meets carries
// the right lap bit and the walk comes back to where it began, under a
// forged head 2^40 words ahead (found by FuzzSmoke.ring_reader: a timeout):
// the reader skips no more than a lap of cancelled records, then stops and
// says the ring is damaged.
TEST(RingTest, CancelledRecordsThatLoopOverTwoLapsEndTheRound) {
  SmallRing t(0, 0);
  uint64_t* w = ring::LaneWords(t.r.h, 1);
  auto put = [&](uint64_t pos, unsigned words) {
    w[pos % 64] = ring::WithLap(
        ring::EncodeHeader(ring::Kind::kCancelled, ring::Api::kMalloc, words - ring::kRecordFixedWords, words),
        pos, 64);
  };
  for (uint64_t pos = 0; pos < 56; pos += 4) put(pos, 4);   // lap 0: 0, 4, ..., 52
  put(56, 6);                                                // to 62
  put(62, 4);                                                // to 66: lap 1, word 2
  for (uint64_t pos = 66; pos < 118; pos += 4) put(pos, 4);  // words 2, 6, ..., 50
  put(118, 6);                                               // word 54, to 124
  put(124, 4);                                               // word 60, to 128: word 0 at lap 2
  ring::Lanes(t.r.h)[1].head.store(uint64_t{1} << 40);
  t.r.h->lanes_used.store(2);
  ExpectTheReaderStopsDamaged(t, "skipping cancelled records");
}

// The target can rewrite its ring at any time. A record's header changed
// after the reader checked it (here: to claim 65,535 frames) is read as it
// was checked, never as a count of words to copy into a 64-frame record;
// and a lane count raised in the header moves no read of the reader.
TEST(RingTest, HeaderRewrittenAfterItWasCheckedIsNotReadAgain) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 8, 0, ring::Clock::kTsc, &r);
  ring::RingWriter writer;
  writer.Reset(r.h, 1'000'000'000, nullptr, nullptr);
  ring::ThreadLane lane{};
  uint64_t words[ring::kRecordFixedWords + 2];
  for (uint64_t a : {100, 200}) {
    Record(words, ring::Kind::kAlloc, a, 8, 2);
    ASSERT_TRUE(writer.Publish(&lane, words, ring::kRecordFixedWords + 2, 8));
  }
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(r.h, r.bytes));
  client::RingRecord rec;
  ASSERT_TRUE(reader.Next(&rec));  // the first; the second is now checked and ready
  EXPECT_EQ(rec.address, 100u);
  uint64_t* lane_words = ring::LaneWords(r.h, lane.lane);
  const uint64_t second = ring::kRecordFixedWords + 2;
  lane_words[second] = ring::WithLap(
      ring::EncodeHeader(ring::Kind::kAlloc, ring::Api::kMalloc, 0xffff, 0xffff), second, 1 << 8);
  r.h->lane_count = ring::kMaxLanes;
  ASSERT_TRUE(reader.Next(&rec));
  EXPECT_EQ(rec.address, 200u);
  EXPECT_EQ(rec.nframes, 2);
  EXPECT_EQ(rec.frames[0], 200u);
  EXPECT_EQ(rec.frames[1], 201u);
  r.h->lane_count = 2;
}

// The target can truncate its ring file under the forwarder, which maps it
// shared: touching the pages past the new end raises SIGBUS. That ring is
// damaged, said so, and everything else goes on (the forwarder serves other
// processes).
TEST(RingTest, RingTruncatedUnderTheReaderDamagesThatRingOnly) {
  testing::TempDir dir;
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 10, 0, ring::Clock::kTsc, &r);
  r.h->dropped_events.store(3);
  ring::RingWriter writer;
  writer.Reset(r.h, 1'000'000'000, nullptr, nullptr);
  ring::ThreadLane lane{};
  uint64_t words[ring::kRecordFixedWords + 2];
  for (uint64_t a : {100, 200, 300}) {
    Record(words, ring::Kind::kAlloc, a, 8, 2);
    ASSERT_TRUE(writer.Publish(&lane, words, ring::kRecordFixedWords + 2, 8));
  }
  client::RingReader reader;
  ASSERT_TRUE(reader.Open(r.path));
  client::RingRecord rec;
  ASSERT_TRUE(reader.Next(&rec));
  EXPECT_EQ(rec.address, 100u);
  EXPECT_EQ(reader.dropped_events(), 3u);
  EXPECT_EQ(reader.damage(), nullptr);

  ASSERT_EQ(truncate(r.path.c_str(), 4096), 0);  // the header's first page stays
  EXPECT_FALSE(reader.Next(&rec));
  ASSERT_NE(reader.damage(), nullptr);
  EXPECT_STREQ(reader.damage(), "its ring file was truncated while it was read");
  reader.Release();
  EXPECT_EQ(reader.Maps(), "");
  EXPECT_EQ(reader.dropped_events(), 3u);  // the last value read
  EXPECT_EQ(reader.Uncommitted(), 0u);
  EXPECT_EQ(reader.identity().pid, 1);
  EXPECT_FALSE(reader.Next(&rec));

  // A file truncated between open's size check and the first read.
  client::RingReader late;
  EXPECT_FALSE(late.Open(r.path));  // too small now: refused
  ASSERT_EQ(truncate(r.path.c_str(), 0), 0);
  client::RingReader empty;
  EXPECT_FALSE(empty.Open(r.path));
  munmap(r.h, r.bytes);
  r.h = nullptr;
}

// The guard takes only faults in its own range: any other crash of the
// forwarder is still a crash, handled as it was before the guard (killed by
// SIGSEGV; under AddressSanitizer, its report and exit code).
TEST(RingTest, FaultGuardLetsOtherCrashesCrash) {
  EXPECT_EXIT(
      {
        static char buffer[64];
        client::FaultGuard guard(buffer, sizeof buffer);
        void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(page, 4096);
        if (sigsetjmp(guard.env, 0) == 0) *static_cast<volatile int*>(page) = 1;
        _exit(0);  // the guard took a fault outside its range
      },
      [](int status) { return !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }, "");
}

// Rings arrive in a directory a sidecar may share with every process of a
// pod: a file there can claim any pid. One that claims a live process of
// another user, a symlink, or something that is not a regular file is never
// read as that process.
// The forwarder on rings (ForwarderTest: they start a server, so gRPC and abseil
// run, which ThreadSanitizer cannot see into: ./dev.sh sanitize thread runs
// RingTest.* only).
TEST(ForwarderTest, RingsThatPoseAsAnotherUsersProcessOrAreNoFilesAreIgnored) {
  testing::TempDir dir, elsewhere;
  client::ForwarderOptions opts;
  opts.ring_dir = dir.path();
  opts.channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  {
    TestRing r;  // claims pid 1 (init, uid 0), but belongs to another user
    MakeRing(dir.path(), 1, 1 << 8, 0, ring::Clock::kTsc, &r);
    ASSERT_EQ(chown(r.path.c_str(), geteuid() + 4242, getegid()), 0);
    TestRing target;  // a real ring, reached through a symlink
    MakeRing(elsewhere.path(), 1, 1 << 8, 0, ring::Clock::kTsc, &target);
    ASSERT_EQ(symlink(target.path.c_str(), (dir.path() + "/2-2.ring").c_str()), 0);
    ASSERT_EQ(mkfifo((dir.path() + "/3-3.ring").c_str(), 0600), 0);
    client::Forwarder fwd(opts);
    fwd.Poll();
    EXPECT_TRUE(fwd.process_ids().empty());
  }
  {
    TestRing r;  // the same claim by init's own user is read
    MakeRing(dir.path(), 1, 1 << 8, 0, ring::Clock::kTsc, &r);
    ASSERT_EQ(chown(r.path.c_str(), 0, 0), 0);
    client::Forwarder fwd(opts);
    fwd.Poll();
    EXPECT_EQ(fwd.process_ids().size(), 1u);
  }
}

// A cgoheapd in this process on a free loopback port, RocksDB in data_dir.
absl::StatusOr<std::unique_ptr<server::Server>> LocalServer(const std::string& data_dir) {
  server::ServerOptions opts;
  opts.listen = "127.0.0.1:0";
  opts.data_dir = data_dir;
  return server::Server::Start(opts);
}

// The forwarder's pace is the lanes' space, not their records: 300 records
// of 40 frames (44 words each) in lanes of 2^16 words are 13,200 words, 0.81
// of a quarter lane, where counting records would have called them 300 of
// 8,192 and slept five times too long for such stacks (writers then wait for
// room). Records the reader skips (cancelled pairs) count too.
TEST(ForwarderTest, PollReportsTheLaneSpaceRead) {
  testing::TempDir dir, data;
  auto server = LocalServer(data.path());
  ASSERT_TRUE(server.ok()) << server.status();
  TestRing r;
  constexpr uint64_t kLaneWords = 1 << 16;
  MakeRing(dir.path(), 2, kLaneWords, 0, ring::Clock::kStripes, &r);
  r.h->pid = getpid();
  ring::RingWriter writer;
  writer.Reset(r.h, 10'000'000'000, nullptr, nullptr);
  ring::ThreadLane lane{};
  uint64_t words[ring::kRecordFixedWords + 40];
  for (int i = 0; i < 300; ++i) {
    Record(words, ring::Kind::kAlloc, 0x100000 + 64 * i, 48, 40);
    ASSERT_TRUE(writer.Publish(&lane, words, ring::kRecordFixedWords + 40, 48));
  }
  client::ForwarderOptions opts;
  opts.ring_dir = dir.path();
  opts.channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  client::Forwarder fwd(opts);
  double read = 0;
  for (int i = 0; i < 10 && read == 0; ++i) read = fwd.Poll();  // the ring is found, then read
  EXPECT_DOUBLE_EQ(read, 300.0 * 44 / (kLaneWords / 4));
  EXPECT_EQ(fwd.Poll(), 0.0);
  ASSERT_TRUE(fwd.Finish(absl::Seconds(30)).ok());
}

// PollPacer sleeps about as long as a quarter of a lane took to fill at the
// last poll's pace (1 to 50 ms), and twice as long after each poll that read
// nothing.
TEST(PollPacerTest, SleepsAsLongAsAQuarterOfALaneTakesToFill) {
  client::PollPacer pacer;
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  EXPECT_EQ(pacer.Next(0, t0), 2);
  EXPECT_EQ(pacer.Next(1.0, t0 + absl::Milliseconds(10)), 10);   // a quarter in 10 ms
  EXPECT_EQ(pacer.Next(0.5, t0 + absl::Milliseconds(20)), 20);   // half a quarter in 10 ms
  EXPECT_EQ(pacer.Next(4.0, t0 + absl::Milliseconds(21)), 1);    // faster than 1 ms: 1
  EXPECT_EQ(pacer.Next(0.001, t0 + absl::Milliseconds(31)), 50); // slower than 50 ms: 50
  EXPECT_EQ(pacer.Next(0, t0 + absl::Milliseconds(81)), 50);     // idle: at most 50
}

// A batch whose stacks are all new can outgrow the server's message limit
// long before it has max_batch_events events (a program starting up, deep
// C++ stacks): the server would refuse it, and with it the process's whole
// stream. Batches are bounded by bytes too. Here 1,500 distinct stacks of
// 64 real frames (this test binary's own functions) make ~20 MB of new stacks.
TEST(ForwarderTest, BatchesStayUnderTheMessageLimitWhateverTheirStacks) {
  testing::TempDir dir, data;
  auto server = LocalServer(data.path());
  ASSERT_TRUE(server.ok()) << server.status();
  char exe[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", exe, sizeof exe - 1), 0);
  ElfImage elf;
  ElfSection text;
  ASSERT_TRUE(elf.Open(exe) && elf.FindSection(".text", &text));
  const uint64_t start = 0x10000000;  // the whole file mapped at offset 0 (PIE: vaddr == offset)
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 18, 0, ring::Clock::kTsc, &r);
  r.h->pid = getpid();
  std::string maps = absl::StrFormat("%x %x 0 %s\n", start, start + 0x10000000, exe);
  memcpy(r.h->maps, maps.data(), maps.size());
  r.h->maps_len = static_cast<uint32_t>(maps.size());
  ring::RingWriter writer;
  writer.Reset(r.h, 10'000'000'000, nullptr, nullptr);
  ring::ThreadLane lane{};
  constexpr int kStacks = 1500;
  uint64_t words[ring::kRecordFixedWords + 64];
  uint64_t x = 12345;
  auto next = [&] { return (x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 20; };
  // 256 return addresses (each symbolized once), combined into distinct stacks.
  std::vector<uint64_t> pcs(256);
  for (uint64_t& pc : pcs) pc = start + text.addr + next() % text.size;
  for (int i = 0; i < kStacks; ++i) {
    Record(words, ring::Kind::kAlloc, 0x1000 + 64 * i, 48, 64);
    for (int f = 0; f < 64; ++f) words[ring::kRecordFixedWords + f] = pcs[next() % pcs.size()];
    ASSERT_TRUE(writer.Publish(&lane, words, ring::kRecordFixedWords + 64, 48));
  }
  client::ForwarderOptions opts;
  opts.ring_dir = dir.path();
  opts.channel =
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  client::Forwarder fwd(opts);
  fwd.Poll();
  absl::Status st = fwd.Finish(absl::Seconds(60));
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(fwd.process_ids().size(), 1u);
  auto stub = v1::Query::NewStub(opts.channel);
  grpc::ClientContext ctx;
  v1::ListProcessesResponse list;
  ASSERT_TRUE(stub->ListProcesses(&ctx, v1::ListProcessesRequest(), &list).ok());
  ASSERT_EQ(list.processes_size(), 1);
  EXPECT_EQ(list.processes(0).live_blocks(), static_cast<uint64_t>(kStacks));
  EXPECT_EQ(list.processes(0).live_bytes(), static_cast<uint64_t>(kStacks) * 48);
}

// The window a crash can fall into: the server made a batch durable and
// acknowledged it, and the forwarder died before handing that ring space
// back. The next forwarder must neither lose those events nor send them
// twice: it resumes at the ring positions the server kept with the batch.
TEST(ForwarderTest, ThatDiesAfterTheAckIsResumedWithoutDuplicates) {
  testing::TempDir dir, data;
  auto server = LocalServer(data.path());
  ASSERT_TRUE(server.ok()) << server.status();
  TestRing r;
  MakeRing(dir.path(), 2, 1 << 12, 0, ring::Clock::kTsc, &r);
  r.h->pid = getpid();
  ring::RingWriter writer;
  writer.Reset(r.h, 10'000'000'000, nullptr, nullptr);
  ring::ThreadLane lane{};
  auto put = [&](int from, int to) {
    uint64_t words[ring::kRecordFixedWords + 1];
    for (int i = from; i < to; ++i) {
      Record(words, ring::Kind::kAlloc, 0x1000 + 64 * i, 32, 1);
      ASSERT_TRUE(writer.Publish(&lane, words, ring::kRecordFixedWords + 1, 32));
    }
  };
  client::ForwarderOptions opts;
  opts.ring_dir = dir.path();
  opts.max_batch_delay = absl::ZeroDuration();  // every poll sends what it read
  opts.resumable = true;
  opts.channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Query::NewStub(opts.channel);
  auto process = [&] {
    grpc::ClientContext ctx;
    v1::ListProcessesResponse list;
    EXPECT_TRUE(stub->ListProcesses(&ctx, v1::ListProcessesRequest(), &list).ok());
    return list;
  };
  put(0, 100);
  std::string id;
  {
    client::Forwarder first(opts);
    first.Poll();  // reads the 100 and sends them; the space is not given back yet
    ASSERT_TRUE(WaitFor([&] {
      auto list = process();
      return list.processes_size() == 1 && list.processes(0).events() == 100;
    }));
    id = first.process_ids()[0];
    EXPECT_EQ(ring::Lanes(r.h)[lane.lane].tail.load(), 0u) << "given back before the next poll";
  }  // dies here, as if killed: nothing more is released or sent
  put(100, 150);
  client::Forwarder second(opts);
  ASSERT_TRUE(WaitFor([&] {
    second.Poll();
    auto list = process();
    return list.processes_size() == 1 && list.processes(0).events() >= 150;
  }));
  second.Poll();
  auto list = process();
  ASSERT_EQ(list.processes_size(), 1);
  EXPECT_EQ(list.processes(0).process_id(), id);
  EXPECT_EQ(list.processes(0).events(), 150u) << "the first 100 again would make 250";
  EXPECT_EQ(list.processes(0).live_blocks(), 150u);
  EXPECT_TRUE(second.Finish(absl::Seconds(30)).ok());
}

}  // namespace
}  // namespace cgoheap
