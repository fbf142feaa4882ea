// The forwarder's index of the allocations in the batch it is building, by
// address: a free that finds its allocation there cancels both (neither is
// sent). Every allocation and every free of a traced process passes through
// it, so it is a small open-addressing table made for that one job: linear
// probing over 16-byte slots, deletion by shifting the run back (no
// tombstones, so a table that sees millions of inserts and erases never
// needs a rebuild), doubled when half full.
//
//   AddressIndex ix;
//   ix.Set(addr, i);                 // insert or overwrite
//   int i; if (ix.Take(addr, &i)) …  // found, and erased
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace cgoheap::client {

class AddressIndex {
 public:
  AddressIndex() : slots_(kMinSlots) {}

  size_t size() const { return count_ + (zero_set_ ? 1 : 0); }

  void Set(uint64_t address, int value) {
    if (address == 0) {  // 0 marks an empty slot: the ring may still say 0
      zero_set_ = true;
      zero_value_ = value;
      return;
    }
    if (2 * (count_ + 1) > slots_.size()) Grow();
    size_t mask = slots_.size() - 1;
    for (size_t i = Home(address);; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.address == address) {
        s.value = value;
        return;
      }
      if (s.address == 0) {
        s = Slot{address, value};
        ++count_;
        return;
      }
    }
  }

  // The value set for address, erased; false if there is none.
  bool Take(uint64_t address, int* value) {
    if (address == 0) {
      if (!zero_set_) return false;
      zero_set_ = false;
      *value = zero_value_;
      return true;
    }
    size_t mask = slots_.size() - 1;
    size_t i = Home(address);
    for (;; i = (i + 1) & mask) {
      if (slots_[i].address == address) break;
      if (slots_[i].address == 0) return false;
    }
    *value = slots_[i].value;
    // Backward shift: move later members of the run into the hole when the
    // hole lies between their home and where they sit.
    for (size_t hole = i, j = (i + 1) & mask;; j = (j + 1) & mask) {
      if (slots_[j].address == 0) {
        slots_[hole].address = 0;
        break;
      }
      size_t home = Home(slots_[j].address);
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    --count_;
    return true;
  }

  void Clear() {
    zero_set_ = false;
    if (count_ == 0) return;
    memset(static_cast<void*>(slots_.data()), 0, slots_.size() * sizeof(Slot));
    count_ = 0;
  }

 private:
  struct Slot {
    uint64_t address;
    int value;
  };
  static constexpr size_t kMinSlots = 256;

  size_t Home(uint64_t address) const {
    // Fibonacci hashing: allocations are 16-byte aligned and close together,
    // so the high bits of the product, not the low bits of the address.
    return static_cast<size_t>((address * 0x9e3779b97f4a7c15ULL) >> shift_);
  }

  void Grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    --shift_;
    count_ = 0;
    size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.address == 0) continue;
      size_t i = Home(s.address);
      while (slots_[i].address != 0) i = (i + 1) & mask;
      slots_[i] = s;
      ++count_;
    }
  }

  std::vector<Slot> slots_;
  size_t count_ = 0;
  unsigned shift_ = 64 - 8;  // log2(kMinSlots) bits of hash
  bool zero_set_ = false;
  int zero_value_ = 0;
};

}  // namespace cgoheap::client
