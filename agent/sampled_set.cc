#include "agent/sampled_set.h"

#include <sys/mman.h>

namespace cgoheap::agent {

// Every probe reads a slot before it writes one, and an anonymous page read
// first maps the kernel's shared zero page: the write that follows copies
// it and flushes the old mapping from every CPU the program runs on (an IPI
// to the other cores, inside someone else's allocation). The hash spreads
// the samples over the whole table, so every page would take those two
// faults early on. A table of up to kPopulateBytes (256 KiB at
// --sample-bytes=524288, 2 MiB at 65536) is mapped written from the start:
// a few hundred or thousand samples would have touched all of it anyway.
constexpr size_t kPopulateBytes = size_t{2} << 20;

bool SampledSet::Init(size_t slots) {
  const size_t bytes = slots * sizeof(uint64_t);
  const int populate = bytes <= kPopulateBytes ? MAP_POPULATE : 0;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | populate, -1, 0);
  if (p == MAP_FAILED) return false;
  slots_ = static_cast<std::atomic<uint64_t>*>(p);
  mask_ = slots - 1;
  bits_ = __builtin_ctzll(slots);
  return true;
}

void SampledSet::FilterAdd(uint64_t addr, int delta) {
  std::atomic_ref<uint8_t> c = Byte(FilterIndex(addr));
  uint8_t cur = c.load(std::memory_order_relaxed);
  while (cur != 255 && !c.compare_exchange_weak(cur, static_cast<uint8_t>(cur + delta),
                                                std::memory_order_relaxed)) {
  }
}

void SampledSet::Pin(uint64_t lo, uint64_t hi) {
  for (uint64_t a = lo & ~uint64_t{15}; a < hi; a += 16) {
    size_t i = FilterIndex(a);
    pinned_[i / 64] |= uint64_t{1} << (i % 64);
    Byte(i).store(255, std::memory_order_relaxed);
  }
}

void SampledSet::Flood() {
  if (flooded_) return;
  for (size_t i = 0; i < kFilterSize; ++i) Byte(i).store(255, std::memory_order_relaxed);
  flooded_ = true;
}

void SampledSet::Unflood() {
  if (!flooded_) return;
  for (size_t i = 0; i < kFilterSize; ++i) {
    if ((pinned_[i / 64] >> (i % 64) & 1) == 0) Byte(i).store(0, std::memory_order_release);
  }
  flooded_ = false;
}

bool SampledSet::Insert(uint64_t addr) {
  FilterAdd(addr, 1);  // before the table: a racing MaybeContains errs on "maybe"
  size_t i = Home(addr);
  for (int p = 0; p < kMaxProbe; ++p, i = (i + 1) & mask_) {
    uint64_t cur = slots_[i].load(std::memory_order_relaxed);
    while (cur == kEmpty || cur == kDeleted) {
      if (slots_[i].compare_exchange_weak(cur, addr, std::memory_order_release,
                                          std::memory_order_relaxed)) {
        return true;
      }
    }
  }
  FilterAdd(addr, -1);
  return false;
}

bool SampledSet::Erase(uint64_t addr) {
  size_t i = Home(addr);
  for (int p = 0; p < kMaxProbe; ++p, i = (i + 1) & mask_) {
    uint64_t cur = slots_[i].load(std::memory_order_acquire);
    if (cur == addr) {
      if (!slots_[i].compare_exchange_strong(cur, kDeleted, std::memory_order_acq_rel)) {
        return false;
      }
      FilterAdd(addr, -1);
      return true;
    }
    if (cur == kEmpty) return false;
  }
  return false;
}

}  // namespace cgoheap::agent
