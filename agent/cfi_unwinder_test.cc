// The cached CFI unwinder against libunwind, on a chain of C frames compiled
// without frame pointers, and its cache.
#include "agent/cfi_unwinder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include <cstdint>
#include <vector>

#include "agent/agent.h"

extern "C" int cgoheap_capture_stack_libunwind(uint64_t* pcs, int max);
extern "C" uint64_t cgoheap_chain_cache_hits();

namespace cgoheap::agent {
namespace {

struct Captured {
  std::vector<uint64_t> cfi, libunwind;
};

// Each level has a stack frame of a different size and no frame pointer.
__attribute__((noinline, optimize("omit-frame-pointer"))) void Leaf(Captured* c) {
  uint64_t a[64], b[64];
  int n = cgoheap_capture_stack(a, 64);
  int m = cgoheap_capture_stack_libunwind(b, 64);
  c->cfi.assign(a, a + n);
  c->libunwind.assign(b, b + m);
  asm volatile("" ::: "memory");
}

template <int N>
__attribute__((noinline, optimize("omit-frame-pointer"))) void Level(Captured* c) {
  volatile char pad[N * 24 + 8];
  pad[0] = 1;
  if constexpr (N == 0) {
    Leaf(c);
  } else {
    Level<N - 1>(c);
  }
  asm volatile("" ::"r"(pad) : "memory");
}

TEST(CfiUnwinderTest, AgreesWithLibunwindOnDeepCStacks) {
  Captured c;
  Level<12>(&c);
  ASSERT_GE(c.cfi.size(), 14u);
  // Frame 0 is each capture's own call site in Leaf, and the libunwind path
  // may add a frame of its own wrapper (when the compiler does not tail-call
  // it): align on Leaf's caller, then every frame up to main and beyond must
  // agree. (Where each stops in libc's start-up code may differ by a frame.)
  ASSERT_GE(c.cfi.size(), 16u);
  auto at = std::find(c.libunwind.begin(), c.libunwind.end(), c.cfi[1]);
  ASSERT_NE(at, c.libunwind.end()) << ::testing::PrintToString(c.cfi) << "\n"
                                   << ::testing::PrintToString(c.libunwind);
  size_t off = at - c.libunwind.begin();
  ASSERT_LE(off, 2u);
  size_t common = std::min(c.cfi.size() - 1, c.libunwind.size() - off);
  ASSERT_GE(common, 15u);
  for (size_t i = 0; i < common; ++i) {
    EXPECT_EQ(c.cfi[1 + i], c.libunwind[off + i]) << "frame " << 1 + i;
  }
}

TEST(CfiUnwinderTest, RulesAreLearntOnceAndReused) {
  Captured c;
  Level<6>(&c);  // learns every frame of this stack
  CfiCacheStats before = CfiStats();
  for (int i = 0; i < 100; ++i) Level<6>(&c);
  CfiCacheStats after = CfiStats();
  // 100 passes of ~20 frames: only a call site the compiler duplicated in
  // this test body may be new.
  EXPECT_LE(after.misses - before.misses, 2u);
  EXPECT_GE(after.entries, 8u);
}

// Like the preload shim: keeps its frame pointer and captures from its frame.
__attribute__((noinline, optimize("no-omit-frame-pointer"))) int Shim(uint64_t* out) {
  int n = cgoheap_capture_stack(out, 64, __builtin_frame_address(0));
  asm volatile("" ::: "memory");
  return n;
}
__attribute__((noinline, optimize("omit-frame-pointer"))) int Mid(uint64_t* out) {
  volatile char pad[40];
  pad[0] = 1;
  int n = Shim(out);
  asm volatile("" ::"r"(pad) : "memory");
  return n;
}
// Two callers with the same frame layout: Mid (and so the capture) runs at
// the same SP from either, with the same first return address; only the
// return address into Top<K> differs.
template <int K>
__attribute__((noinline, optimize("omit-frame-pointer"))) int Top(uint64_t* out) {
  volatile char pad[72];
  pad[0] = K;
  int n = Mid(out);
  asm volatile("" ::"r"(pad) : "memory");
  return n + pad[0] - K;
}

// The same with frame pointers: each CFA is computed from RBP, so the cache
// must check the saved RBPs as well as the return addresses.
__attribute__((noinline, optimize("no-omit-frame-pointer"))) int MidFp(uint64_t* out) {
  volatile char pad[40];
  pad[0] = 1;
  int n = Shim(out);
  asm volatile("" ::"r"(pad) : "memory");
  return n;
}
template <int K>
__attribute__((noinline, optimize("no-omit-frame-pointer"))) int TopFp(uint64_t* out) {
  volatile char pad[72];
  pad[0] = K;
  int n = MidFp(out);
  asm volatile("" ::"r"(pad) : "memory");
  return n + pad[0] - K;
}

__attribute__((noinline)) int Either(int k, uint64_t* out) {
  switch (k) {
    case 1: return Top<1>(out);
    case 2: return Top<2>(out);
    case 3: return TopFp<3>(out);
    default: return TopFp<4>(out);
  }
}

// Paths 1 and 2 (and 3 and 4) start at the same return address and SP and
// differ one frame up. Each is captured three times: unwound, then served
// from the cache, and each time the same; never one path for the other.
TEST(CfiUnwinderTest, ChainCacheServesRepeatedStacksAndNeverAnotherPath) {
  std::thread([] {  // a shallow stack, as on a cgo call's g0 stack
    std::vector<uint64_t> got[3][4];
    uint64_t hits[3];
    for (int round = 0; round < 3; ++round) {
      hits[round] = cgoheap_chain_cache_hits();
      for (int k = 1; k <= 4; ++k) {
        uint64_t buf[64];
        int n = Either(k, buf);
        got[round][k - 1].assign(buf, buf + n);
      }
    }
    uint64_t end = cgoheap_chain_cache_hits();
    EXPECT_EQ(hits[1] - hits[0], 0u) << "first round: nothing cached yet";
    EXPECT_EQ(end - hits[1], 8u) << "later rounds: every path cached";
    for (int k = 0; k < 4; k += 2) {
      ASSERT_GE(got[0][k].size(), 4u);
      EXPECT_EQ(got[0][k][0], got[0][k + 1][0]) << "same call site in Mid";
      EXPECT_NE(got[0][k][1], got[0][k + 1][1]) << "different callers of Mid";
    }
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(got[1][k], got[0][k]) << "path " << k + 1;
      EXPECT_EQ(got[2][k], got[0][k]) << "path " << k + 1;
    }
  }).join();
}

TEST(CfiUnwinderTest, AddressesWithoutUnwindInfoStopCleanly) {
  UnwindRegs r{0x1000, 0x7fff0000, 0};
  EXPECT_EQ(CfiStep(&r, true), StepResult::kNoInfo);
}

}  // namespace
}  // namespace cgoheap::agent
