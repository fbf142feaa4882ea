#include "agent/sampled_set.h"

#include <sys/mman.h>

namespace cgoheap::agent {

bool SampledSet::Init(size_t slots) {
  void* p = mmap(nullptr, slots * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  slots_ = static_cast<std::atomic<uint64_t>*>(p);
  mask_ = slots - 1;
  bits_ = __builtin_ctzll(slots);
  return true;
}

bool SampledSet::Insert(uint64_t addr) {
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
  return false;
}

bool SampledSet::Erase(uint64_t addr) {
  size_t i = Home(addr);
  for (int p = 0; p < kMaxProbe; ++p, i = (i + 1) & mask_) {
    uint64_t cur = slots_[i].load(std::memory_order_acquire);
    if (cur == addr) {
      return slots_[i].compare_exchange_strong(cur, kDeleted, std::memory_order_acq_rel);
    }
    if (cur == kEmpty) return false;
  }
  return false;
}

}  // namespace cgoheap::agent
