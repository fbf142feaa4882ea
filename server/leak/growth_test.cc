#include "server/leak/growth.h"

#include <gtest/gtest.h>

#include <cmath>

namespace cgoheap::server {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kWindow = 160 * kSecond;  // samples every 10 s

// Samples every 10 s over [30 s, 200 s] of bytes(t in seconds): the window
// (from 40 s) and the one sample before it, as HeapState keeps them.
template <typename F>
std::vector<GrowthSample> Sampled(F bytes) {
  std::vector<GrowthSample> out;
  for (int64_t t = 30; t <= 200; t += 10) out.push_back({t * kSecond, bytes(static_cast<double>(t))});
  return out;
}

TEST(GrowthTest, ALeakUnderChurnGrowsAndChurnOrACacheDoesNot) {
  const int64_t now = 200 * kSecond;
  // 100 bytes leaked every 10 s, under churn of 0 to 1,000 bytes (the rise
  // must beat half the churn of the window's first quarter).
  auto leak = Sampled([](double t) { return 10 * t + (static_cast<int>(t) % 30 == 0 ? 1000 : 0); });
  GrowthVerdict v = JudgeGrowth(leak, now, kWindow);
  EXPECT_TRUE(v.grows);
  EXPECT_NEAR(v.rate_per_hour, 36000, 36000 * 0.2);  // 10 bytes/s
  EXPECT_EQ(v.since, now - kWindow);
  // Churn alone: the floor stays flat.
  EXPECT_FALSE(JudgeGrowth(Sampled([](double t) { return std::fmod(t, 30) * 100; }), now, kWindow).grows);
  // A cache that filled in the first minute, then stays.
  EXPECT_FALSE(JudgeGrowth(Sampled([](double t) { return std::min(t, 60.0) * 100; }), now, kWindow).grows);
  // A window not covered yet: too early to say.
  std::vector<GrowthSample> young(leak.end() - 5, leak.end());
  EXPECT_FALSE(JudgeGrowth(young, now, kWindow).grows);
  EXPECT_FALSE(JudgeGrowth({}, now, kWindow).grows);
}

}  // namespace
}  // namespace cgoheap::server
