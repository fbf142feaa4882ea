#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "agent/ring.h"
#include "agent/ring_writer.h"
#include "client/ring_reader.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

// Creates a ring file the way the agent does (header, then rename).
std::string MakeRing(const std::string& dir, uint64_t words, uint64_t sample_bytes,
                     ring::RingHeader** out) {
  std::string path = dir + "/1-1.ring";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0600);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, ring::RingFileBytes(words)), 0);
  void* p = mmap(nullptr, ring::RingFileBytes(words), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  auto* h = static_cast<ring::RingHeader*>(p);
  h->version = ring::kVersion;
  h->header_bytes = ring::kHeaderBytes;
  h->capacity_words = words;
  h->pid = 1;
  h->sample_bytes = sample_bytes;
  h->magic = ring::kMagic;
  *out = h;
  return path;
}

TEST(RingTest, ManyWritersOneReaderLoseNothingAndKeepPerThreadOrder) {
  testing::TempDir dir;
  ring::RingHeader* h;
  std::string path = MakeRing(dir.path(), 1 << 12, 0, &h);  // small: wraps many times
  ring::RingWriter writer;
  writer.Reset(h, 10'000'000'000);
  client::RingReader reader;
  ASSERT_TRUE(reader.Attach(h, ring::RingFileBytes(1 << 12)));  // one mapping: see RingReader::Attach
  ASSERT_FALSE(path.empty());
  constexpr int kThreads = 4, kPerThread = 50000;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int i = 0; i < kPerThread; ++i) {
        unsigned nframes = i % 5;
        uint64_t words[3 + 5];
        words[0] = ring::EncodeHeader(ring::Kind::kAlloc, ring::Api::kMalloc, nframes, 3 + nframes);
        words[1] = (uint64_t(t) << 32) | i;  // address: thread and sequence
        words[2] = i;
        for (unsigned f = 0; f < nframes; ++f) words[3 + f] = words[1] + f;
        ASSERT_TRUE(writer.Publish(words, 3 + nframes, i));
      }
    });
  }
  go = true;
  std::vector<int> next(kThreads, 0);
  int total = 0;
  client::RingRecord rec;
  while (total < kThreads * kPerThread) {
    while (reader.Next(&rec)) {
      int t = static_cast<int>(rec.address >> 32), i = static_cast<int>(rec.address & 0xffffffff);
      ASSERT_LT(t, kThreads);
      ASSERT_EQ(i, next[t]) << "thread " << t;
      ASSERT_EQ(rec.size, static_cast<uint64_t>(i));
      ASSERT_EQ(rec.nframes, i % 5);
      for (int f = 0; f < rec.nframes; ++f) ASSERT_EQ(rec.frames[f], rec.address + f);
      ++next[t];
      ++total;
    }
    reader.Release();
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(h->dropped_events.load(), 0u);
  EXPECT_EQ(reader.Uncommitted(), 0u);
  munmap(h, ring::RingFileBytes(1 << 12));
}

TEST(RingTest, FullRingDropsAndCountsInsteadOfBlocking) {
  testing::TempDir dir;
  ring::RingHeader* h;
  MakeRing(dir.path(), 64, /*sample_bytes=*/524288, &h);
  ring::RingWriter writer;
  writer.Reset(h, 0);
  uint64_t words[3] = {ring::EncodeHeader(ring::Kind::kFree, ring::Api::kFree, 0, 3), 1, 0};
  int written = 0;
  for (int i = 0; i < 100; ++i) written += writer.Publish(words, 3, 10);
  EXPECT_EQ(written, 64 / 3);
  EXPECT_EQ(h->dropped_events.load(), 100u - 64 / 3);
  EXPECT_EQ(h->dropped_bytes.load(), (100u - 64 / 3) * 10);
  munmap(h, ring::RingFileBytes(64));
}

TEST(RingTest, ExactModeWaitsBoundedlyThenDropsAtOnceUntilTheReaderMoves) {
  testing::TempDir dir;
  ring::RingHeader* h;
  std::string path = MakeRing(dir.path(), 64, 0, &h);
  ring::RingWriter writer;
  writer.Reset(h, 20'000'000);  // 20 ms
  uint64_t words[3] = {ring::EncodeHeader(ring::Kind::kFree, ring::Api::kFree, 0, 3), 1, 0};
  for (int i = 0; i < 64 / 3; ++i) ASSERT_TRUE(writer.Publish(words, 3, 0));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(writer.Publish(words, 3, 0));  // waits ~20 ms, then drops
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(20));
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(writer.Publish(words, 3, 0));  // no more waits
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(h->dropped_events.load(), 1001u);
  client::RingReader reader;
  ASSERT_TRUE(reader.Open(path));
  client::RingRecord rec;
  int read = 0;
  while (reader.Next(&rec)) ++read;
  reader.Release();
  EXPECT_EQ(read, 64 / 3);
  EXPECT_TRUE(writer.Publish(words, 3, 0));  // the reader moved: writing resumes
  munmap(h, ring::RingFileBytes(64));
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
}

}  // namespace
}  // namespace cgoheap
