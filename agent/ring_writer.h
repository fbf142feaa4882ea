// The writer side of the event ring (agent/ring.h), allocation-free and
// lock-free, callable from inside an allocator hook.
//
//   RingWriter w;
//   w.Reset(header, /*full_wait_ns=*/2'000'000'000, on_claim);
//   thread_local ThreadLane lane;                 // zero-initialized
//   w.Publish(&lane, words, nwords, size);        // false: dropped (counted)
//
// Exact mode, allocations and frees (ring.h, "Cancelled pairs"):
//   w.PublishAlloc(&lane, words, nwords, size);   // words[2]: the address
//   if (!w.CancelAlloc(&lane, address)) w.Publish(&lane, free_words, 4, 0);
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "agent/ring.h"

namespace cgoheap::ring {

// What one thread knows about its lane. Trivially zero-initialized, so it can
// live in initial-exec TLS.
struct ThreadLane {
  uint32_t gen;         // the RingWriter generation this state belongs to
  uint32_t lane;        // 0: none of its own (writes the shared lane 0)
  uint64_t known_tail;  // a tail of the lane seen earlier: tails only grow
  uint32_t retry;       // shared-lane events left before looking for a free lane again
  bool exiting;         // the thread is exiting: never claim again
  uint64_t clock;       // Clock::kStripes: the key of this thread's last record
  // Its latest allocations in its own lane that a free by this thread may
  // cancel (Clock::kStripes, exact mode): a set of two per hash of the
  // address, the older of the two giving way. Two ways, not one slot: with
  // one (32 slots), two blocks live at once shared a slot often enough (a
  // loop holding three blocks at a time: in 9% of its iterations, and 4% of
  // its pairs were not taken back) that the older one's free found nothing,
  // and its record, the free's and those around them stayed in the lane
  // for the forwarder.
  // Addresses are kept complemented (Hide): no block's address stays in
  // the agent's memory, where cgoheap's exit scan (client/exit_scan.h)
  // would take it for the program's pointer and call the block reachable.
  static constexpr uint64_t Hide(uint64_t address) { return ~address; }
  struct RecentAlloc {
    uint64_t address;  // Hide(the block's)
    uint64_t pos;  // of its header in the lane
    uint64_t key;  // its key; 0: an empty way (keys start at 1)
  };
  static constexpr unsigned kRecentSets = 64;
  RecentAlloc recent[kRecentSets][2];
};

class RingWriter {
 public:
  // Called before a thread takes a free lane: false (its storage cannot be
  // allocated) leaves the lane free and the thread on the shared lane.
  using ReserveHook = bool (*)(uint32_t lane);
  // Called once per claimed lane, on the claiming thread (the agent registers
  // a thread-exit handler that gives the lane back).
  using ClaimHook = void (*)(uint32_t gen, uint32_t lane);

  constexpr RingWriter() = default;

  // Starts writing a new ring (nullptr: none); every thread's old ThreadLane
  // is void from here on (generation), as after a fork.
  void Reset(RingHeader* h, uint64_t full_wait_ns, ReserveHook reserve, ClaimHook on_claim) {
    header_ = h;
    // Frees cancel allocations only on the stripes path in exact mode (the
    // stripe is what proves an allocation is still the thread's own).
    cancels_ = h != nullptr && h->clock == static_cast<uint32_t>(Clock::kStripes) &&
               h->sample_bytes == 0;
    full_wait_ns_ = full_wait_ns;
    reserve_ = reserve;
    on_claim_ = on_claim;
    shared_known_tail_.store(h != nullptr ? Lanes(h)[0].tail.load(std::memory_order_acquire) : 0,
                             std::memory_order_relaxed);
    gen_.fetch_add(1, std::memory_order_acq_rel);
  }

  // Writes one record (words[0]: its header word; words[1] is set here to the
  // record's key). When the lane is full, the writer waits up to full_wait_ns
  // for the reader, and after one such timeout drops at once until the reader
  // moves again, so a dead forwarder costs each thread one wait, not one per
  // event. A sampled process waits only to record a free: a lost allocation
  // is one sample fewer (its free is then ignored), a lost free would show a
  // freed block as leaked.
  bool Publish(ThreadLane* tl, uint64_t* words, unsigned n, uint64_t size) {
    uint64_t pos = 0;
    return PublishAt(tl, words, words + kRecordFixedWords, n - kRecordFixedWords, size, &pos) !=
           kDropped;
  }

  // An allocation's record (words[2]: its address), which a later free by
  // this thread may cancel (CancelAlloc) while the reader has not read it.
  bool PublishAlloc(ThreadLane* tl, uint64_t* words, unsigned n, uint64_t size) {
    return PublishAlloc(tl, words, words + kRecordFixedWords, n - kRecordFixedWords, size);
  }
  // The same, with the record's fixed words (kRecordFixedWords of them) and
  // its frames apart: the frames are copied from where the stack capture
  // keeps them.
  bool PublishAlloc(ThreadLane* tl, uint64_t* words, const uint64_t* frames, unsigned nframes,
                    uint64_t size) {
    uint64_t pos = 0;
    Where where = PublishAt(tl, words, frames, nframes, size, &pos);
    if (where == kOwnLane && cancels_) {
      ThreadLane::RecentAlloc* set = tl->recent[RecentSet(words[2])];
      const uint64_t hidden = ThreadLane::Hide(words[2]);
      // The way that held this address before, else an empty one, else the
      // older (keys rise in a thread).
      const unsigned way = set[0].address == hidden   ? 0
                           : set[1].address == hidden ? 1
                           : set[0].key == 0          ? 0
                           : set[1].key == 0          ? 1
                                                      : (set[1].key < set[0].key ? 1 : 0);
      set[way] = ThreadLane::RecentAlloc{hidden, pos, words[1]};
    }
    return where != kDropped;
  }

  // Before the real free of address, by this thread: true if this cancelled
  // the thread's own record of its allocation (ring.h, "Cancelled pairs"),
  // so that the free needs no record; false: publish the free.
  __attribute__((always_inline)) bool CancelAlloc(ThreadLane* tl, uint64_t address) {
    RingHeader* h = header_;
    if (tl->gen != gen_.load(std::memory_order_relaxed) || tl->lane == 0) return false;
    ThreadLane::RecentAlloc* set = tl->recent[RecentSet(address)];
    // Found by a branch (nearly always way 0), not by an index computed from
    // a load: the key's load need not wait for the way's.
    ThreadLane::RecentAlloc* way;
    const uint64_t hidden = ThreadLane::Hide(address);
    if (set[0].address == hidden) {
      way = &set[0];
    } else if (set[1].address == hidden) {
      way = &set[1];
    } else {
      return false;
    }
    ThreadLane::RecentAlloc& slot = *way;
    if (slot.key == 0) return false;
    const ThreadLane::RecentAlloc r = slot;
    slot = ThreadLane::RecentAlloc{};
    // Any event on the address since (another thread's free of the block,
    // the allocator giving it out again) raised the stripe above r.key.
    if (StripeOf(address).load(std::memory_order_relaxed) != r.key) return false;
    LaneDesc* d = &Lanes(h)[tl->lane];
    const uint64_t cap = h->lane_words, mask = cap - 1;
    // Only this thread writes its lane: less than a lap behind its head, the
    // record's words are still the record's.
    const uint64_t head = d->head.load(std::memory_order_relaxed);
    if (head - r.pos >= cap) return false;
    uint64_t* ring = LaneWords(h, tl->lane);
    std::atomic_ref<uint64_t> header(ring[r.pos & mask]);
    uint64_t was = header.load(std::memory_order_relaxed);
    if (!IsHeaderAt(was, r.pos, cap) || HeaderKind(was) != Kind::kAlloc ||
        ring[(r.pos + 1) & mask] != r.key || ring[(r.pos + 2) & mask] != address) {
      return false;
    }
    // The newest record, and the reader has not looked this far: taken back
    // whole (ring.h, "Rolled-back pairs").
    if (head == r.pos + HeaderWords(was)) {
      d->head.store(r.pos, std::memory_order_seq_cst);
      if (d->seen.load(std::memory_order_seq_cst) <= r.pos) {
        d->rolled_back.store(d->rolled_back.load(std::memory_order_relaxed) + 1,
                             std::memory_order_relaxed);
        return true;
      }
      d->head.store(head, std::memory_order_release);  // it may be read: marked instead
    }
    // The reader takes it with the same compare-and-swap (kAlloc to kTaken).
    return header.compare_exchange_strong(was, WithKind(was, Kind::kCancelled),
                                          std::memory_order_relaxed, std::memory_order_relaxed);
  }

  // Gives a lane back (its owner is exiting). Its unread records stay; the
  // next owner appends after them.
  void ReleaseLane(ThreadLane* tl) {
    if (header_ != nullptr && tl->gen == gen_.load(std::memory_order_relaxed) && tl->lane != 0) {
      LaneDesc& d = Lanes(header_)[tl->lane];
      d.last_key.store(tl->clock, std::memory_order_relaxed);  // published by the release below
      d.owner.store(0, std::memory_order_release);
    }
    tl->lane = 0;
    tl->exiting = true;
    for (auto& set : tl->recent) set[0] = set[1] = ThreadLane::RecentAlloc{};
  }

 private:
  // Publish's work; where the record went, and at pos its position in an
  // owned lane.
  enum Where { kDropped, kOwnLane, kSharedLane };
  // The record: words[0..kRecordFixedWords), then frames[0..nframes).
  __attribute__((always_inline)) Where PublishAt(ThreadLane* tl, uint64_t* words,
                                                 const uint64_t* frames, unsigned nframes,
                                                 uint64_t size, uint64_t* pos) {
    RingHeader* h = header_;
    uint32_t gen = gen_.load(std::memory_order_relaxed);
    if (tl->gen != gen) *tl = ThreadLane{gen, 0, 0, 0, tl->exiting, tl->clock, {}};
    if (tl->lane == 0 && !tl->exiting && tl->retry-- == 0) Claim(tl);
    bool may_wait = h->sample_bytes == 0 || HeaderKind(words[0]) == Kind::kFree;
    bool ok = tl->lane != 0 ? PublishOwn(h, tl, words, frames, nframes, may_wait, pos)
                            : PublishShared(h, tl, words, frames, nframes, may_wait);
    if (!ok) {
      h->dropped_events.fetch_add(1, std::memory_order_relaxed);
      h->dropped_bytes.fetch_add(size, std::memory_order_relaxed);
      return kDropped;
    }
    return tl->lane != 0 ? kOwnLane : kSharedLane;
  }

  static uint64_t MonotonicNanos() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }

  // Clock::kStripes (ring.h, "Order across lanes"): one word per stripe of
  // addresses, 32 KiB in all. Only events on the same address need order,
  // so the stripe is a hash of the whole address: two blocks a thread uses
  // at once rarely share one, and a free can cancel its allocation however
  // many other blocks of the same page the thread allocated in between
  // (CancelAlloc).
  static constexpr unsigned kStripeBits = 12;
  static std::atomic<uint64_t>& StripeOf(uint64_t address) {
    return stripes_[(address * 0x9e3779b97f4a7c15ULL) >> (64 - kStripeBits)];
  }
  static unsigned RecentSet(uint64_t address) {
    return static_cast<unsigned>((address * 0xff51afd7ed558ccdULL) >>
                                 (64 - std::countr_zero(ThreadLane::kRecentSets)));
  }
  // Raises a stripe's word to key (never lowers it: a larger value another
  // event wrote stays, and still orders what follows it).
  static void Raise(std::atomic<uint64_t>& stripe, uint64_t seen, uint64_t key) {
    while (seen < key &&
           !stripe.compare_exchange_weak(seen, key, std::memory_order_relaxed,
                                         std::memory_order_relaxed)) {
    }
  }
  // The key of a record of this thread on address (own lane). Relaxed
  // atomics suffice: whatever made this event depend on another (the
  // allocator handing the address over, the program passing the pointer)
  // orders that event's Raise before this load.
  static uint64_t StripeKey(ThreadLane* tl, uint64_t address) {
    std::atomic<uint64_t>& stripe = StripeOf(address);
    uint64_t seen = stripe.load(std::memory_order_relaxed);
    uint64_t key = (seen > tl->clock ? seen : tl->clock) + 1;
    Raise(stripe, seen, key);
    tl->clock = key;
    return key;
  }
  // Lane 0 under Clock::kStripes: {head, last_key} from {pos, last} to
  // {pos + n, key} in one CMPXCHG16B; on failure pos and last are set to
  // what the lane holds.
  static bool ReserveWithKey(LaneDesc* d, uint64_t& pos, uint64_t& last, uint64_t end,
                             uint64_t key) {
    static_assert(offsetof(LaneDesc, head) == 0 && offsetof(LaneDesc, last_key) == 8 &&
                  alignof(LaneDesc) >= 16);
    auto* pair = reinterpret_cast<char(*)[16]>(reinterpret_cast<char*>(d));  // bytes may alias
    bool ok;
    asm volatile("lock cmpxchg16b %[pair]"
                 : "=@ccz"(ok), [pair] "+m"(*pair), "+a"(pos),
                   "+d"(last)
                 : "b"(end), "c"(key)
                 : "memory");
    return ok;
  }

  // RDTSCP for every record, allocations too: a plain RDTSC may execute
  // before earlier instructions (the allocator's own loads and locks) have,
  // and so read a time before the free that made the address available.
  static uint64_t Key(RingHeader* h) {
    if (h->clock == static_cast<uint32_t>(Clock::kTsc)) return TscRecordKey();
    return h->counter.fetch_add(1, std::memory_order_seq_cst);
  }

  __attribute__((noinline)) void Claim(ThreadLane* tl) {
    RingHeader* h = header_;
    LaneDesc* lanes = Lanes(h);
    auto tid = static_cast<uint32_t>(syscall(SYS_gettid));
    for (uint32_t i = 1; i < h->lane_count; ++i) {
      uint32_t free_owner = 0;
      if (lanes[i].owner.load(std::memory_order_relaxed) != 0 ||
          !lanes[i].owner.compare_exchange_strong(free_owner, tid, std::memory_order_acquire,
                                                  std::memory_order_relaxed)) {
        continue;
      }
      if (reserve_ != nullptr && !reserve_(i)) {
        lanes[i].owner.store(0, std::memory_order_release);
        break;  // no room for lanes: share lane 0
      }
      uint32_t used = h->lanes_used.load(std::memory_order_relaxed);
      while (used < i + 1 && !h->lanes_used.compare_exchange_weak(
                                 used, i + 1, std::memory_order_release, std::memory_order_relaxed)) {
      }
      tl->lane = i;
      tl->known_tail = lanes[i].tail.load(std::memory_order_acquire);
      // The lane's keys rise: start above its last owner's (Clock::kStripes).
      uint64_t before = lanes[i].last_key.load(std::memory_order_relaxed);
      if (before > tl->clock) tl->clock = before;
      if (on_claim_ != nullptr) on_claim_(tl->gen, i);
      return;
    }
    tl->retry = 1024;  // every lane taken: use the shared one for a while
  }

  // Room for n words at pos, waiting (exact mode) if the lane is full. In the
  // shared lane pos moves under us: a stale pos (below the tail) counts as
  // room, and the caller reserves again.
  bool WaitForRoom(RingHeader* h, LaneDesc* d, uint64_t pos, unsigned n, bool may_wait,
                   uint64_t* known_tail) {
    const uint64_t cap = h->lane_words;
    auto room = [&](uint64_t tail) { return pos < tail || pos + n - tail <= cap; };
    uint64_t tail = d->tail.load(std::memory_order_acquire);
    *known_tail = tail;
    if (room(tail)) return true;
    if (!may_wait || tail + 1 == d->stalled_tail.load(std::memory_order_relaxed)) {
      return false;
    }
    // Once asleep, wait for a quarter of the lane (not just this record):
    // one wake-up per burst of the reader, not one per record.
    auto quarter = [&](uint64_t tail) { return pos < tail || pos + cap / 4 - tail <= cap; };
    uint64_t deadline = MonotonicNanos() + full_wait_ns_;
    for (;;) {
      // Dekker with the reader's Release: it stores the tail, then reads
      // `waiting`; we store `waiting`, then read the tail. One of the two
      // sees the other, so a wake-up is never lost.
      d->waiting.store(1, std::memory_order_seq_cst);
      uint32_t seq = d->wake.load(std::memory_order_seq_cst);
      tail = d->tail.load(std::memory_order_seq_cst);
      *known_tail = tail;
      if (quarter(tail) && room(tail)) return true;
      uint64_t now = MonotonicNanos();
      if (now >= deadline) {
        d->stalled_tail.store(tail + 1, std::memory_order_relaxed);
        return false;
      }
      uint64_t left = deadline - now;
      if (left > 10'000'000) left = 10'000'000;  // look again now and then regardless
      timespec ts{0, static_cast<long>(left)};
      syscall(SYS_futex, &d->wake, FUTEX_WAIT, seq, &ts, nullptr, 0);
    }
  }

  // A record's words after its header word, at pos of a lane.
  static void CopyBody(uint64_t* ring, uint64_t pos, uint64_t mask, const uint64_t* words,
                       const uint64_t* frames, unsigned nframes) {
    const uint64_t at = pos & mask;
    if (at + kRecordFixedWords + nframes <= mask + 1) {  // the common case: no wrap
      uint64_t* to = ring + at;
      for (unsigned i = 1; i < kRecordFixedWords; ++i) to[i] = words[i];
      to += kRecordFixedWords;
      for (unsigned i = 0; i < nframes; ++i) to[i] = frames[i];
      return;
    }
    for (unsigned i = 1; i < kRecordFixedWords; ++i) ring[(pos + i) & mask] = words[i];
    pos += kRecordFixedWords;
    for (unsigned i = 0; i < nframes; ++i) ring[(pos + i) & mask] = frames[i];
  }

  // The thread's own lane: plain stores, one release store of the head.
  // Inlined: the path of nearly every event.
  __attribute__((always_inline)) bool PublishOwn(RingHeader* h, ThreadLane* tl, uint64_t* words,
                                                 const uint64_t* frames, unsigned nframes,
                                                 bool may_wait, uint64_t* at) {
    const unsigned n = kRecordFixedWords + nframes;
    LaneDesc* d = &Lanes(h)[tl->lane];
    const uint64_t cap = h->lane_words, mask = cap - 1;
    uint64_t pos = d->head.load(std::memory_order_relaxed);
    if (pos + n - tl->known_tail > cap && !WaitForRoom(h, d, pos, n, may_wait, &tl->known_tail)) {
      return false;
    }
    uint64_t* ring = LaneWords(h, tl->lane);
    words[1] = h->clock == static_cast<uint32_t>(Clock::kStripes) ? StripeKey(tl, words[2]) : Key(h);
    CopyBody(ring, pos, mask, words, frames, nframes);
    // Atomic: its kind may change later, by this thread (CancelAlloc) or by
    // the reader taking it, while the other loads it.
    std::atomic_ref<uint64_t>(ring[pos & mask])
        .store(WithLap(words[0], pos, cap), std::memory_order_relaxed);
    d->head.store(pos + n, std::memory_order_release);
    *at = pos;
    return true;
  }

  // Lane 0, shared: reserve with a CAS on its head, commit with a release
  // store of the header word.
  bool PublishShared(RingHeader* h, ThreadLane* tl, uint64_t* words, const uint64_t* frames,
                     unsigned nframes, bool may_wait) {
    const unsigned n = kRecordFixedWords + nframes;
    LaneDesc* d = &Lanes(h)[0];
    const uint64_t cap = h->lane_words, mask = cap - 1;
    const bool stripes = h->clock == static_cast<uint32_t>(Clock::kStripes);
    uint64_t pos = d->head.load(std::memory_order_relaxed);
    uint64_t last = stripes ? d->last_key.load(std::memory_order_relaxed) : 0;
    // The reader's tail only ever grows, so a value seen earlier still proves
    // there is room. Acquire/release: the slots this tail frees were read by
    // the reader before it published the tail; that must happen-before our
    // writes even when we learn the tail from another writer.
    uint64_t tail = shared_known_tail_.load(std::memory_order_acquire);
    for (;;) {
      if (pos < tail) {  // pos is older than a tail another writer saw
        pos = d->head.load(std::memory_order_relaxed);
        if (stripes) last = d->last_key.load(std::memory_order_relaxed);
        continue;
      }
      if (pos + n - tail > cap) {
        uint64_t seen;
        bool room = WaitForRoom(h, d, pos, n, may_wait, &seen);
        tail = seen;
        shared_known_tail_.store(tail, std::memory_order_release);
        if (!room) return false;
        pos = d->head.load(std::memory_order_relaxed);
        if (stripes) last = d->last_key.load(std::memory_order_relaxed);
        continue;
      }
      if (stripes) {
        // Above the thread's clock, the stripe, and the lane's last key,
        // reserved with the position (pos and last are reloaded on failure).
        std::atomic<uint64_t>& stripe = StripeOf(words[2]);
        uint64_t seen = stripe.load(std::memory_order_relaxed);
        uint64_t key = std::max(std::max(seen, tl->clock), last) + 1;
        if (ReserveWithKey(d, pos, last, pos + n, key)) {
          Raise(stripe, seen, key);
          tl->clock = key;
          words[1] = key;
          break;
        }
        continue;
      }
      // The key is read after the head was seen and before the CAS: if the
      // CAS succeeds, every record before pos was reserved, so keyed, before
      // the head was seen, so keys rise with positions in this lane too (a
      // key read after the CAS could come out below a later writer's).
      uint64_t key = Key(h);
      if (d->head.compare_exchange_weak(pos, pos + n, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
        words[1] = key;
        break;
      }
    }
    uint64_t* ring = LaneWords(h, 0);
    CopyBody(ring, pos, mask, words, frames, nframes);
    std::atomic_ref<uint64_t>(ring[pos & mask])
        .store(WithLap(words[0], pos, cap), std::memory_order_release);
    return true;
  }

  RingHeader* header_ = nullptr;
  bool cancels_ = false;
  uint64_t full_wait_ns_ = 2'000'000'000;
  ReserveHook reserve_ = nullptr;
  ClaimHook on_claim_ = nullptr;
  std::atomic<uint32_t> gen_{0};
  alignas(64) std::atomic<uint64_t> shared_known_tail_{0};
  // Clock::kStripes: one set for the process (any ring: they only grow).
  static inline std::atomic<uint64_t> stripes_[1u << kStripeBits] = {};
};

}  // namespace cgoheap::ring
