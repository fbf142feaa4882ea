#include "agent/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <thread>
#include <vector>

#include "agent/sampled_set.h"
#include "common/sampling.h"

namespace cgoheap::agent {
namespace {

// Runs on a fresh thread so the thread's sampler starts from scratch.
uint64_t CountSamples(size_t size, uint64_t rate, int n) {
  uint64_t count = 0;
  std::thread([&] {
    for (int i = 0; i < n; ++i) count += SampleAllocation(size, rate);
  }).join();
  return count;
}

TEST(SamplerTest, SamplesWithTheProbabilityOfAPoissonProcessByBytes) {
  constexpr int kN = 1'000'000;
  for (size_t size : {size_t{16}, size_t{100}, size_t{4096}, size_t{100000}}) {
    constexpr uint64_t kRate = 4096;
    double p = -std::expm1(-static_cast<double>(size) / kRate);
    double expected = kN * p, sigma = std::sqrt(kN * p * (1 - p));
    uint64_t got = CountSamples(size, kRate, kN);
    EXPECT_NEAR(static_cast<double>(got), expected, 6 * sigma + 1) << "size " << size;
    // Weighted, the samples give back the true totals.
    EXPECT_NEAR(got * SampleWeight(size, kRate), kN, kN * 0.05) << "size " << size;
  }
}

// The shim's fast path (on x86-64 a subtract-and-branch in assembly): true
// exactly when CountDown's compare would say so, the size taken off; false
// at zero and below (exact mode's countdown of 0 sends a malloc(0) to the
// slow path too), and for sizes that wrap, with countdown - size left for
// the slow path to overwrite.
TEST(SamplerTest, TheShimsCountDownCrossesWhereTheCompareDoes) {
  std::thread([] {
    struct Case {
      uint64_t countdown;
      size_t size;
      bool stays;
    };
    const Case cases[] = {
        {10, 3, true},         {10, 9, true},          {10, 10, false},
        {10, 11, false},       {0, 0, false},          {0, 1, false},
        {1, 0, true},          {kNeverSample, 4096, true},
        {100, ~size_t{0}, false}, {100, size_t{1} << 63, false},
        {kNeverSample, size_t{1} << 62, false},
    };
    for (const Case& c : cases) {
      t_sampler.countdown = c.countdown;
      ThreadSampler compare{c.countdown, 0};
      EXPECT_EQ(CountDownOrCross(c.size), c.stays) << c.countdown << " - " << c.size;
      EXPECT_EQ(CountDown(compare, c.size), c.stays) << c.countdown << " - " << c.size;
      if (c.stays) {
        EXPECT_EQ(t_sampler.countdown, c.countdown - c.size) << c.countdown << " - " << c.size;
      }
    }
  }).join();
}

TEST(SamplerTest, WeightsAreOneInExactModeAndGrowForSmallBlocks) {
  EXPECT_EQ(SampleWeight(48, 0), 1.0);
  EXPECT_NEAR(SampleWeight(524288, 524288), 1 / (1 - std::exp(-1.0)), 1e-9);
  EXPECT_NEAR(SampleWeight(1, 524288), 524288.5, 1.0);
  EXPECT_GT(SampleWeight(48, 4096), SampleWeight(4800, 4096));
}

TEST(SampledSetTest, InsertEraseAndFullTable) {
  SampledSet set;
  ASSERT_TRUE(set.Init(1 << 10));
  for (uint64_t a = 1; a <= 500; ++a) ASSERT_TRUE(set.Insert(a * 16 + 0x10000));
  EXPECT_TRUE(set.Erase(0x10000 + 16 * 7));
  EXPECT_FALSE(set.Erase(0x10000 + 16 * 7)) << "already erased";
  EXPECT_FALSE(set.Erase(0x99990));
  for (uint64_t a = 1; a <= 500; ++a) {
    if (a == 7) continue;
    EXPECT_TRUE(set.Erase(a * 16 + 0x10000)) << a;
  }
  // Tombstones are reused: churn far beyond the capacity still fits.
  for (int round = 0; round < 50; ++round) {
    for (uint64_t a = 1; a <= 400; ++a) ASSERT_TRUE(set.Insert(a * 4096 + round));
    for (uint64_t a = 1; a <= 400; ++a) ASSERT_TRUE(set.Erase(a * 4096 + round));
  }
}

// The filter in front of the table: never "no" for a member; one byte per
// 16-byte granule of a 512 KiB window, so a member makes none of its
// neighbours look like one; and neighbours on few lines of the filter (the
// multiplicative hash it had before passes the first two and fails that).
TEST(SampledSetTest, FilterHasNoFalseNegativesAndNoAliasesInsideAWindow) {
  SampledSet set;
  ASSERT_TRUE(set.Init(1 << 12));
  const uint64_t window = uint64_t{0x7f3a12} << 19;  // a 512 KiB window
  const uint64_t member = window + 0x2a3c0;
  ASSERT_TRUE(set.Insert(member));
  EXPECT_TRUE(set.MaybeContains(member));
  int aliases = 0;
  for (uint64_t a = window; a < window + (uint64_t{1} << 19); a += 16) {
    if (a != member && set.MaybeContains(a)) ++aliases;
  }
  EXPECT_EQ(aliases, 0);
  // Neighbours share cache lines of the filter: the frees of 16 KiB of
  // heap read 16 lines of it (a hashed index: one line each, ~1000).
  std::set<size_t> lines;
  for (uint64_t a = member; a < member + 16384; a += 16) lines.insert(SampledSet::FilterIndex(a) / 64);
  EXPECT_LE(lines.size(), 17u);
  EXPECT_TRUE(set.Erase(member));
  EXPECT_FALSE(set.MaybeContains(member)) << "the count went back to zero";

  // Members spread over many windows: every one reads "maybe".
  std::vector<uint64_t> members;
  for (uint64_t i = 0; i < 3000; ++i) members.push_back(0x555500000000 + i * 0x1230 + (i % 7) * 16);
  for (uint64_t m : members) ASSERT_TRUE(set.Insert(m));
  for (uint64_t m : members) EXPECT_TRUE(set.MaybeContains(m)) << std::hex << m;
  for (uint64_t m : members) ASSERT_TRUE(set.Erase(m));
  for (uint64_t m : members) EXPECT_FALSE(set.MaybeContains(m)) << std::hex << m;
}

// Pinned granules (the shim's bootstrap blocks) read "maybe" for good, with
// no entry in the table, whatever is inserted and erased beside them.
TEST(SampledSetTest, PinnedGranulesStayMaybe) {
  SampledSet set;
  ASSERT_TRUE(set.Init(1 << 12));
  const uint64_t lo = 0x600000001000, hi = lo + 100;  // granules lo .. lo+96
  set.Pin(lo, hi);
  for (uint64_t a = lo; a < hi; a += 16) EXPECT_TRUE(set.MaybeContains(a)) << a - lo;
  EXPECT_FALSE(set.MaybeContains(hi + 12)) << "the next granule is not pinned";
  EXPECT_FALSE(set.MaybeContains(lo - 16));
  EXPECT_FALSE(set.Erase(lo)) << "pinned, not a member";
  ASSERT_TRUE(set.Insert(lo + 32));
  ASSERT_TRUE(set.Erase(lo + 32));
  EXPECT_TRUE(set.MaybeContains(lo + 32)) << "a saturated count never moves";
  set.Pin(lo, lo);  // an empty range pins nothing
  EXPECT_FALSE(set.MaybeContains(hi + 12));
}

// The agent's own set starts flooded (the allocator shim's kStarting and
// exact mode: free's fast path reads only the filter, and must send every
// free to the slow path); Unflood leaves the pins and nothing else, Flood
// brings the flood back (a fork child going exact).
TEST(SampledSetTest, FloodedUntilUnfloodedAndPinsSurvive) {
  static SampledSet set{SampledSet::FloodedTag{}};  // as the agent's: 32 KiB, constant-initialized
  ASSERT_TRUE(set.flooded());
  const uint64_t lo = 0x600000001000, hi = lo + 64;
  set.Pin(lo, hi);
  std::vector<uint64_t> probes;
  for (uint64_t i = 0; i < 70000; ++i) probes.push_back(0x555500000000 + i * 0x1230 + (i % 7) * 16);
  for (uint64_t a : probes) ASSERT_TRUE(set.MaybeContains(a)) << "flooded: " << std::hex << a;
  set.Unflood();
  EXPECT_FALSE(set.flooded());
  size_t maybe = 0;
  for (uint64_t a : probes) maybe += set.MaybeContains(a) ? 1 : 0;
  EXPECT_LE(maybe, probes.size() / 1000) << "only the pins' bytes stay";
  // free's fast path (compared in place on x86-64) reads what MaybeContains does.
  ASSERT_TRUE(set.MaybeContainsFast(lo));
  for (uint64_t a : probes) ASSERT_EQ(set.MaybeContainsFast(a), set.MaybeContains(a)) << std::hex << a;
  for (uint64_t a = lo; a < hi; a += 16) EXPECT_TRUE(set.MaybeContains(a)) << "pinned: " << a - lo;
  ASSERT_TRUE(set.Init(1 << 12));
  ASSERT_TRUE(set.Insert(probes[5]));
  EXPECT_TRUE(set.MaybeContains(probes[5]));
  ASSERT_TRUE(set.Erase(probes[5]));
  EXPECT_FALSE(set.MaybeContains(probes[5]));
  set.Unflood();  // already: no-op
  EXPECT_FALSE(set.MaybeContains(probes[5]));
  set.Flood();
  for (uint64_t a : probes) ASSERT_TRUE(set.MaybeContains(a)) << "flooded again: " << std::hex << a;
  set.Unflood();
  for (uint64_t a = lo; a < hi; a += 16) EXPECT_TRUE(set.MaybeContains(a)) << "still pinned: " << a - lo;
  EXPECT_FALSE(set.MaybeContains(probes[5]));
}

TEST(SampledSetTest, ConcurrentInsertAndErase) {
  SampledSet set;
  ASSERT_TRUE(set.Init(1 << 16));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        for (uint64_t i = 0; i < 1000; ++i) {
          if (!set.Insert((uint64_t(t + 1) << 40) | (i << 4))) ++failures;
        }
        for (uint64_t i = 0; i < 1000; ++i) {
          if (!set.Erase((uint64_t(t + 1) << 40) | (i << 4))) ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace cgoheap::agent
