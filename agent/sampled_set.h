// The addresses of sampled allocations that are still live, so that a free
// costs one lookup and only the frees of sampled blocks are recorded.
//
// Lock-free open addressing over an anonymous mapping (touched lazily):
// insert claims an empty or deleted slot with a CAS; erase swaps the address
// for a tombstone. An address is live at most once at a time (the allocator
// cannot return it again before its free, which erases it first), so there
// are no duplicate entries to worry about.
//
//   SampledSet set;  set.Init(1 << 20);
//   if (!set.Insert(p)) ...table full: count a drop...
//   if (set.Erase(p)) ...record the free...
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cgoheap::agent {

// Thread-safe, but for Flood and Unflood (see there).
class SampledSet {
 public:
  constexpr SampledSet() = default;
  // A set whose filter starts flooded (every address "maybe"): the agent's
  // own, so that free's fast path, which reads only the filter (until the
  // shim knows the next allocator, and for good unless it is glibc's:
  // preload.cc), sends every free to the slow path until the mode is known
  // (see Flood).
  struct FloodedTag {};
  constexpr explicit SampledSet(FloodedTag) : flooded_(true) {
    for (uint8_t& b : filter_) b = 255;
  }
  bool Init(size_t slots);  // power of two; start-up only
  bool Insert(uint64_t addr);
  bool Erase(uint64_t addr);
  bool ready() const { return slots_ != nullptr; }
  // Marks every 16-byte granule of [lo, hi) "maybe" in the filter for
  // good (a saturated count never moves), with no entry in the table: the
  // allocator shim's bootstrap blocks, which free must never pass on.
  void Pin(uint64_t lo, uint64_t hi);

  // Flood: every byte of the filter "maybe" (the allocator shim's exact mode
  // and start-up, whose frees must all reach the slow path). Unflood: back
  // to the counts of an empty set, the pinned granules kept "maybe" (sampled
  // and off modes). A no-op when already so. Flood only where no other
  // thread can be freeing (a fork child); Unflood also while other threads
  // free (the mode then is one whose slow path takes any free): each byte
  // goes from 255 to 0 in one store, and the pinned ones are never touched.
  void Flood();
  void Unflood();
  bool flooded() const { return flooded_; }

  // A counting filter in front of the table (32 KiB): false means addr is
  // certainly not in the set, so the free of an unsampled block costs one
  // byte load, not a probe of the table. Its index keeps neighbours
  // together (see FilterIndex), so the bytes a program's frees read sit on
  // few cache lines.
  // Acquire: a 0 read here was stored after the real allocator was known
  // (Unflood, after the shim resolved it; the filter starts flooded), so a
  // free that reads 0 may call it (a plain load on x86-64).
  bool MaybeContains(uint64_t addr) const {
    return Byte(FilterIndex(addr)).load(std::memory_order_acquire) != 0;
  }
  // The same for free's fast path (preload.cc), on x86-64 with the byte
  // compared where it lies (the compiler loads an atomic byte into a
  // register and tests it there: one instruction more per free). A load on
  // x86-64 is an acquire; "memory" keeps the compiler from hoisting what
  // follows above it.
  __attribute__((always_inline)) bool MaybeContainsFast(uint64_t addr) const {
#if defined(__x86_64__)
    asm goto("cmpb $0, (%0,%1)\n\tjne %l[maybe]"
             :
             : "r"(filter_), "r"(FilterIndex(addr))
             : "cc", "memory"
             : maybe);
    return false;
  maybe:
    return true;
#else
    return MaybeContains(addr);
#endif
  }

  // One byte per 16-byte granule of a 512 KiB window, the window's number
  // folded in by XOR. Blocks close together in memory (a thread's hot
  // chunks, which its allocator hands out again and again) read bytes
  // close together: the frees of 16 KiB of heap touch 16 lines of the
  // filter, where a multiplicative hash touched one line per block. XOR
  // with the window number moves whole cache lines (the line bits of the
  // index depend only on the line bits of the address and of the window
  // number), so neighbours stay neighbours, and no two granules of one
  // window share a byte; blocks 512 KiB apart (page-aligned large blocks)
  // spread with their window numbers instead of piling onto one byte.
  // (Public for the tests.)
  static size_t FilterIndex(uint64_t addr) {
    // (addr >> 4) ^ (addr >> 19), with one shift fewer.
    return ((addr ^ (addr >> 15)) >> 4) & (kFilterSize - 1);
  }
 private:
  static constexpr size_t kFilterSize = size_t{1} << 15;
  void FilterAdd(uint64_t addr, int delta);
  std::atomic_ref<uint8_t> Byte(size_t i) const {
    return std::atomic_ref<uint8_t>(const_cast<uint8_t&>(filter_[i]));
  }

  static constexpr uint64_t kEmpty = 0, kDeleted = 1;
  static constexpr int kMaxProbe = 64;
  size_t Home(uint64_t addr) const {
    return ((addr >> 4) * 0x9e3779b97f4a7c15ULL) >> (64 - bits_);
  }

  std::atomic<uint64_t>* slots_ = nullptr;
  size_t mask_ = 0;
  int bits_ = 0;
  // Saturates at 255 and then stays. Plain bytes reached through
  // atomic_ref, so that the agent's set can start flooded (a constant
  // initializer: no constructor runs before the allocator's first call).
  uint8_t filter_[kFilterSize]{};
  uint64_t pinned_[kFilterSize / 64]{};  // a bit per filter byte that Pin set
  bool flooded_ = false;
};

}  // namespace cgoheap::agent
