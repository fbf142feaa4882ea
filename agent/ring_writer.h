// The writer side of the event ring (agent/ring.h), allocation-free and
// lock-free, callable from inside an allocator hook.
//
//   RingWriter w(header, /*full_wait_ns=*/2'000'000'000);
//   w.Publish(words, nwords, size);   // false: dropped (counted in the header)
#pragma once

#include <time.h>

#include <atomic>
#include <cstdint>

#include "agent/ring.h"

namespace cgoheap::ring {

// Thread-safe: any number of threads may publish into one ring.
class RingWriter {
 public:
  constexpr RingWriter() = default;

  void Reset(RingHeader* h, uint64_t full_wait_ns) {
    header_ = h;
    full_wait_ns_ = full_wait_ns;
    stalled_tail_.store(~uint64_t{0}, std::memory_order_relaxed);
    known_tail_.store(h != nullptr ? h->tail.load(std::memory_order_acquire) : 0,
                      std::memory_order_relaxed);
  }
  RingHeader* header() const { return header_; }

  // Writes one record (words[0] is its header word). When the ring is full, a
  // sampled process drops at once; an exact one waits up to full_wait_ns for
  // the reader, and after one such timeout drops at once until the reader
  // moves again, so a dead forwarder costs the program one wait, not one per
  // event.
  bool Publish(const uint64_t* words, unsigned n, uint64_t size) {
    RingHeader* h = header_;
    uint64_t pos;
    if (!Reserve(h, n, &pos)) {
      h->dropped_events.fetch_add(1, std::memory_order_relaxed);
      h->dropped_bytes.fetch_add(size, std::memory_order_relaxed);
      return false;
    }
    uint64_t* ring = RingWords(h);
    const uint64_t mask = h->capacity_words - 1;
    for (unsigned i = 1; i < n; ++i) ring[(pos + i) & mask] = words[i];
    std::atomic_ref<uint64_t>(ring[pos & mask])
        .store(WithLap(words[0], pos, h->capacity_words), std::memory_order_release);
    return true;
  }

 private:
  static uint64_t MonotonicNanos() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }

  bool Reserve(RingHeader* h, unsigned n, uint64_t* pos_out) {
    const uint64_t cap = h->capacity_words;
    uint64_t pos = h->reserve.load(std::memory_order_relaxed);
    uint64_t deadline = 0;
    // The reader's tail only ever grows, so a value seen earlier still proves
    // there is room, without touching the cache line the reader writes.
    // Acquire/release: the slots this tail frees were read by the reader
    // before it published the tail; that must happen-before our writes even
    // when we learn the tail from another writer (free on x86: plain moves).
    uint64_t tail = known_tail_.load(std::memory_order_acquire);
    for (;;) {
      if (pos < tail) {  // pos is older than a tail another writer saw
        pos = h->reserve.load(std::memory_order_relaxed);
        continue;
      }
      if (pos + n - tail > cap) {
        tail = h->tail.load(std::memory_order_acquire);
        known_tail_.store(tail, std::memory_order_release);
        if (pos < tail) continue;
      }
      if (pos + n - tail > cap) {
        if (h->sample_bytes != 0 || tail == stalled_tail_.load(std::memory_order_relaxed)) {
          return false;
        }
        uint64_t now = MonotonicNanos();
        if (deadline == 0) deadline = now + full_wait_ns_;
        if (now >= deadline) {
          stalled_tail_.store(tail, std::memory_order_relaxed);
          return false;
        }
        timespec ts{0, 50'000};
        nanosleep(&ts, nullptr);
        pos = h->reserve.load(std::memory_order_relaxed);
        continue;
      }
      if (h->reserve.compare_exchange_weak(pos, pos + n, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
        *pos_out = pos;
        return true;
      }
    }
  }

  RingHeader* header_ = nullptr;
  uint64_t full_wait_ns_ = 2'000'000'000;
  std::atomic<uint64_t> stalled_tail_{~uint64_t{0}};
  std::atomic<uint64_t> known_tail_{0};
};

}  // namespace cgoheap::ring
