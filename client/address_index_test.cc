#include "client/address_index.h"

#include <gtest/gtest.h>

#include <random>
#include <unordered_map>

namespace cgoheap::client {
namespace {

// Against a map that is obviously right, through growth and long runs of
// inserts and erases in one neighbourhood (addresses as an allocator hands
// them out: close together, reused), where backward-shift deletion matters.
TEST(AddressIndexTest, AgreesWithAMapThroughMillionsOfChanges) {
  AddressIndex ix;
  std::unordered_map<uint64_t, int> want;
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2'000'000; ++round) {
    // Mostly 4096 addresses 16 bytes apart; sometimes anywhere, sometimes 0.
    uint64_t r = rng();
    uint64_t address = (r % 64 == 0) ? rng() : (r % 97 == 0) ? 0 : 0x7f0000001000 + (r % 4096) * 16;
    if (rng() % 2 == 0) {
      int v = static_cast<int>(round);
      ix.Set(address, v);
      want[address] = v;
    } else {
      int got = -1;
      bool found = ix.Take(address, &got);
      auto it = want.find(address);
      ASSERT_EQ(found, it != want.end()) << "round " << round << " address " << address;
      if (found) {
        ASSERT_EQ(got, it->second);
        want.erase(it);
      }
    }
    ASSERT_EQ(ix.size(), want.size());
    if (round % 500'000 == 499'999) {
      ix.Clear();
      want.clear();
    }
  }
  for (auto& [address, v] : want) {
    int got = -1;
    ASSERT_TRUE(ix.Take(address, &got));
    EXPECT_EQ(got, v);
  }
  EXPECT_EQ(ix.size(), 0u);
}

TEST(AddressIndexTest, ClearForgetsEverything) {
  AddressIndex ix;
  for (uint64_t a = 1; a <= 10'000; ++a) ix.Set(a * 16, 1);
  ix.Set(0, 5);
  EXPECT_EQ(ix.size(), 10'001u);
  ix.Clear();
  int v;
  EXPECT_EQ(ix.size(), 0u);
  EXPECT_FALSE(ix.Take(16, &v));
  EXPECT_FALSE(ix.Take(0, &v));
}

}  // namespace
}  // namespace cgoheap::client
