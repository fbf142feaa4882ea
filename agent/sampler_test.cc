#include "agent/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

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
