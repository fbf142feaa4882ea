#include "client/ring_reader.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <climits>
#include <functional>
#include <cstring>

#include "client/fault_guard.h"

namespace cgoheap::client {

RingReader::~RingReader() {
  if (header_ != nullptr && owned_) munmap(header_, bytes_);
}

bool RingReader::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    open_error_ = errno == ELOOP ? "a symlink: rings are read only from the files agents create"
                                 : std::string("cannot open it: ") + strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    open_error_ = "not a regular file";
    return false;
  }
  const char* not_ring = "not a ring of this version of cgoheap (is the agent the same version?)";
  if (static_cast<size_t>(st.st_size) < ring::kHeaderBytes) {
    close(fd);
    open_error_ = not_ring;
    return false;
  }
  void* p = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    open_error_ = std::string("cannot map it: ") + strerror(errno);
    return false;
  }
  if (!Attach(static_cast<ring::RingHeader*>(p), st.st_size)) {
    munmap(p, st.st_size);
    open_error_ = not_ring;
    return false;
  }
  identity_.owner_uid = st.st_uid;
  identity_.owner_gid = st.st_gid;
  owned_ = true;
  return true;
}

bool RingReader::Attach(ring::RingHeader* h, size_t bytes) {
  FaultGuard guard(h, bytes);
  if (sigsetjmp(guard.env, 0) != 0) return false;  // truncated already
  return Check(h, bytes);
}

// Every field is read once, into a local or a member, and checked there.
bool RingReader::Check(ring::RingHeader* h, size_t bytes) {
  uint64_t words = h->lane_words;
  uint32_t lanes = h->lane_count;
  uint32_t clock = h->clock;
  if (h->magic != ring::kMagic || h->version != ring::kVersion ||
      h->header_bytes != ring::kHeaderBytes || words < 64 || (words & (words - 1)) != 0 ||
      lanes < 1 || lanes > ring::kMaxLanes || ring::RingFileBytes(lanes, words) != bytes ||
      (clock != static_cast<uint32_t>(ring::Clock::kTsc) &&
       clock != static_cast<uint32_t>(ring::Clock::kCounter) &&
       clock != static_cast<uint32_t>(ring::Clock::kStripes))) {
    return false;
  }
  RingIdentity id;
  id.pid = h->pid;
  id.ppid = h->ppid;
  id.start_unix_nanos = h->start_unix_nanos;
  id.sample_bytes = h->sample_bytes;
  id.flags = h->flags;
  id.foreign_allocator = h->foreign_allocator;
  id.clock = static_cast<ring::Clock>(clock);
  char exe[sizeof h->exe], cmdline[sizeof h->cmdline], service[sizeof h->service];
  memcpy(exe, h->exe, sizeof exe);
  memcpy(cmdline, h->cmdline, sizeof cmdline);
  memcpy(service, h->service, sizeof service);
  uint32_t cmdline_len = std::min<uint32_t>(h->cmdline_len, sizeof cmdline);
  id.exe.assign(exe, strnlen(exe, sizeof exe));
  id.cmdline.assign(cmdline, cmdline_len);
  id.service.assign(service, strnlen(service, sizeof service));
  identity_ = std::move(id);
  header_ = h;
  bytes_ = bytes;
  lane_words_ = words;
  lane_count_ = lanes;
  // Only the stripes path in exact mode cancels (RingWriter::PublishAlloc):
  // elsewhere taking an allocation needs no compare-and-swap.
  cancellable_ = identity_.clock == ring::Clock::kStripes && identity_.sample_bytes == 0;
  return true;
}

const char* RingReader::damage() const {
  if (truncated_) return "its ring file was truncated while it was read";
  if (corrupt_) return "its ring holds a record outside the ring protocol";
  return nullptr;
}

uint64_t* RingReader::Lane(uint32_t lane) const {
  char* base = reinterpret_cast<char*>(header_) + ring::kHeaderBytes +
               size_t{lane_count_} * sizeof(ring::LaneDesc);
  return reinterpret_cast<uint64_t*>(base) + size_t{lane} * lane_words_;
}

// A round looks at every lane twice. The first look fixes what may be
// taken: the records published before it (an owned lane's head; in lane 0,
// the run of committed records). The second look, after the first is
// complete, fixes what is seen: whatever a record of the first look depends
// on was published before that record, so before the second look, and is
// seen, with a smaller key (agent/ring.h, "Order across lanes"). Records are
// then taken smallest key first, for as long as the smallest seen is one
// that may be taken; the next round takes the rest.
void RingReader::StartRound() {
  ring::RingHeader* h = header_;
  ring::LaneDesc* descs = ring::Lanes(h);
  // Lanes claimed since the last round join; a lane is claimed before its
  // first record is published. Between the two looks they are read again:
  // a lane claimed during the first look may hold what a record of it
  // depends on (nothing in such a lane may be taken before the next round).
  auto join_lanes = [&] {
    uint32_t used = std::min(h->lanes_used.load(std::memory_order_acquire), lane_count_);
    while (lanes_.size() < used) {
      Cursor c;
      const ring::LaneDesc& d = descs[lanes_.size()];
      c.pos = c.released = d.tail.load(std::memory_order_acquire);
      c.eligible = c.pos;
      // Rolled-back pairs a reader before this one sent (durably) are not
      // counted again.
      c.rolled_back = d.rolled_back_sent.load(std::memory_order_relaxed);
      lanes_.push_back(c);
    }
  };
  join_lanes();
  for (uint32_t i = 0; i < lanes_.size(); ++i) {
    uint64_t head =
        i == 0 ? descs[0].head.load(std::memory_order_acquire) : LookAtHead(descs[i], &lanes_[i]);
    lanes_[i].eligible = i == 0 ? CommittedEnd(head) : head;
    if (round_hook_ != nullptr) round_hook_(i, round_hook_arg_);
  }
  join_lanes();
  ready_.clear();
  blocker_ = UINT64_MAX;
  for (uint32_t i = 0; i < lanes_.size(); ++i) {
    Cursor& c = lanes_[i];
    if (i == 0) {
      c.limit = descs[0].head.load(std::memory_order_acquire);
    } else {
      c.limit = LookAtHead(descs[i], &c);
      // The owner's count; a wrapped or lowered value (a writer outside the
      // protocol) counts nothing.
      uint64_t rolled = descs[i].rolled_back.load(std::memory_order_relaxed);
      if (rolled > c.rolled_back) cancelled_ += rolled - c.rolled_back;
      c.rolled_back = rolled;
    }
    Peek(i);
    if (lanes_[i].ready) ready_.push_back({lanes_[i].key, i});
  }
  // Within a round ready_ only shrinks (a lane taken from is put back or
  // not), so the choice holds until the next round.
  heap_ = ready_.size() > kScanLanes;
  if (heap_) std::make_heap(ready_.begin(), ready_.end(), std::greater<>());
}

// An owned lane's head, as far as this reader may read (ring.h,
// "Rolled-back pairs"): the owner may move its head back and write over a
// record while no reader has looked past it, so the reader first claims
// everything, then reads the head, then says how far it has looked. That
// never goes down: the head read may be one the owner is trying out (it
// moved it back, and will put it back if it sees this reader's claim),
// lower than records this reader has copied and not yet confirmed.
uint64_t RingReader::LookAtHead(ring::LaneDesc& desc, Cursor* c) {
  desc.seen.store(UINT64_MAX, std::memory_order_seq_cst);
  const uint64_t head = desc.head.load(std::memory_order_seq_cst);
  c->seen = std::max(c->seen, head);
  desc.seen.store(c->seen, std::memory_order_release);
  return head;
}

namespace {

// A header word whose sizes are a record's: at most kMaxFrames frames, and
// words for exactly the fixed part and those frames. The target writes it,
// so nothing is read by a size that fails this.
bool WellFormed(uint64_t h) {
  unsigned nframes = ring::HeaderFrames(h);
  return nframes <= ring::kMaxFrames && ring::HeaderWords(h) == ring::kRecordFixedWords + nframes;
}

}  // namespace

uint64_t RingReader::CommittedEnd(uint64_t head) {
  const uint64_t cap = lane_words_, mask = cap - 1;
  const uint64_t* words = Lane(0);
  const uint64_t start = lanes_[0].pos;
  // head comes from the target: never walk more than one lap (all a lane
  // can hold unread), nor over a size no record has. The lap is a single
  // bit, so a forged header claiming two laps would match again at the same
  // word every other lap, until a head near 2^64.
  const uint64_t end = head - start > cap ? start + cap : head;
  uint64_t pos = start;
  while (pos < end) {
    uint64_t h = std::atomic_ref<const uint64_t>(words[pos & mask]).load(std::memory_order_acquire);
    if (!ring::IsHeaderAt(h, pos, cap) || !WellFormed(h)) break;  // Peek then says which
    pos += ring::HeaderWords(h);
  }
  return std::min(pos, head);
}

// Whether lane's next record is seen this round, and its key.
void RingReader::Peek(uint32_t lane) {
  Cursor& c = lanes_[lane];
  c.ready = false;
  c.unfinished = false;
  const uint64_t cap = lane_words_, mask = cap - 1;
  uint64_t* words = Lane(lane);
  // Cancelled records skipped in this call: a lane holds at most one lap
  // unread, so more than that was never written by its thread (a forged
  // head far ahead over cancelled records whose sizes lead the walk round
  // to the same words at alternate laps would hold it here for good).
  uint64_t skipped = 0;
  for (;;) {
    if (corrupt_ || c.pos >= c.limit) return;
    uint64_t h = std::atomic_ref<uint64_t>(words[c.pos & mask]).load(std::memory_order_acquire);
    if (!ring::IsHeaderAt(h, c.pos, cap)) {
      // Lane 0: reserved, not committed yet. Its key is at least the last
      // one taken from lane 0 (keys rise with positions there), and what
      // depends on it has a larger one: nothing from there on is taken until
      // it is written. An owned lane publishes its head after the record: a
      // missing header there is damage.
      if (lane != 0) corrupt_ = true;
      c.unfinished = true;
      if (!writers_gone_) blocker_ = std::min(blocker_, c.floor);
      return;
    }
    const unsigned n = ring::HeaderWords(h);
    if (!WellFormed(h) || c.pos + n > c.limit) {
      corrupt_ = true;  // a writer outside the protocol: stop rather than guess
      return;
    }
    if (ring::HeaderKind(h) == ring::Kind::kCancelled) {
      // Freed by its own thread before we came (ring.h, "Cancelled
      // pairs"): the pair is counted, the record skipped.
      ++cancelled_;
      c.pos += n;
      words_read_ += n;
      skipped += n;
      if (skipped > cap) {
        corrupt_ = true;
        return;
      }
      continue;
    }
    uint64_t key = words[(c.pos + 1) & mask];
    c.header = h;  // Next uses this, not a second read the target could change
    // Lane 0's writers make keys rise with positions (RingWriter::
    // PublishShared); should one not, the lane's order wins.
    if (lane == 0) key = std::max(key, c.floor);
    c.key = key;
    c.ready = true;
    return;
  }
}

// f() with every access to the mapping guarded: if the file was truncated
// under it (or before), the ring is damaged from then on and `fallback` is
// returned. Whatever f calls must not allocate or lock while it touches the
// mapping (see FaultGuard).
template <typename T, typename F>
T RingReader::Guarded(const T& fallback, F f) {
  if (truncated_) return fallback;
  FaultGuard guard(header_, bytes_);
  if (sigsetjmp(guard.env, 0) != 0) {
    truncated_ = true;
    return fallback;
  }
  return f();
}

bool RingReader::Next(RingRecord* rec) { return NextMany(rec, 1) == 1; }

size_t RingReader::NextMany(RingRecord* out, size_t max) {
  if (corrupt_) return 0;
  // n is kept outside the guarded call: records read before a fault stand.
  size_t n = 0;
  // Records copied in all, kept or not: bounded per call, however many the
  // target cancels under us.
  const size_t budget = max + 256;
  size_t copied = 0;
  // At most one new look at the lanes per call: a caller that reads until
  // nothing is left would otherwise look again and again while the program
  // runs, and take every allocation the moment it is published, before its
  // own thread could take it back (ring.h, "Rolled-back pairs").
  bool may_look = true;
  for (;;) {
    const size_t before = n, copied_before = copied;
    Guarded(0, [&] {
      while (n < max && copied < budget && NextRecord(&out[n], &may_look)) {
        ++n;
        ++copied;
      }
      Confirm(out + before, n - before);
      return 0;
    });
    // Out of the guarded call, so that a fault in Confirm leaves no record
    // half moved: the copies it marked cancelled go.
    size_t kept = before;
    for (size_t i = before; i < n; ++i) {
      if (out[i].kind == ring::Kind::kCancelled) continue;
      if (kept != i) out[kept] = out[i];
      ++kept;
    }
    n = kept;
    // Nothing was dropped: the round ran out (or out is full).
    const bool dropped = n - before < copied - copied_before;
    if (!dropped || n == max || copied >= budget || corrupt_ || truncated_) return n;
    // Some copies were cancelled under us: there may be more to read.
  }
}

// Takes the copied allocations of owned lanes from their owners (ring.h,
// "Cancelled pairs"): each header from kAlloc to kTaken, unless the owner
// has cancelled the allocation since it was copied; such a copy is marked
// kCancelled, to be dropped.
void RingReader::Confirm(RingRecord* recs, size_t n) {
  if (!cancellable_) return;
  const uint64_t mask = lane_words_ - 1;
  for (size_t i = 0; i < n; ++i) {
    if (ring::HeaderKind(recs[i].header) != ring::Kind::kAlloc || recs[i].lane == 0) continue;
    std::atomic_ref<uint64_t> header(Lane(recs[i].lane)[recs[i].pos & mask]);
    uint64_t h = recs[i].header;
    if (!header.compare_exchange_strong(h, ring::WithKind(h, ring::Kind::kTaken),
                                        std::memory_order_relaxed, std::memory_order_relaxed) &&
        h == ring::WithKind(recs[i].header, ring::Kind::kCancelled)) {
      recs[i].kind = ring::Kind::kCancelled;
      ++cancelled_;
    }
  }
}

// Guarded by Next: nothing here allocates or locks while it touches the
// mapping (lanes_ and ready_ grow between reads, never during one).
bool RingReader::NextRecord(RingRecord* rec, bool* may_look) {
  // The seen record with the smallest key: taken if it may be (it was
  // there at the first look, and nothing unfinished holds it back), else
  // the round is over.
  size_t at = 0;
  for (bool fresh = false;; fresh = true) {
    if (corrupt_) return false;
    if (!ready_.empty()) {
      at = 0;  // a heap's smallest is at the front
      if (!heap_) {
        for (size_t i = 1; i < ready_.size(); ++i) {
          if (ready_[i] < ready_[at]) at = i;
        }
      }
      const auto& [key, lane] = ready_[at];
      if (key < blocker_ && lanes_[lane].pos < lanes_[lane].eligible) break;
    }
    if (fresh || !*may_look) return false;
    *may_look = false;
    StartRound();
  }
  if (heap_) {
    std::pop_heap(ready_.begin(), ready_.end(), std::greater<>());
    at = ready_.size() - 1;
  }
  const uint32_t lane = ready_[at].second;
  Cursor& c = lanes_[lane];
  const uint64_t mask = lane_words_ - 1;
  const uint64_t* words = Lane(lane);
  const uint64_t h = c.header;  // checked by Peek: at most kMaxFrames frames
  rec->key = c.key;
  rec->pos = c.pos;
  rec->lane = lane;
  rec->header = h;
  rec->kind = ring::HeaderKind(h) == ring::Kind::kTaken ? ring::Kind::kAlloc : ring::HeaderKind(h);
  rec->api = ring::HeaderApi(h);
  rec->address = words[(c.pos + 2) & mask];
  rec->size = words[(c.pos + 3) & mask];
  rec->nframes = static_cast<int>(ring::HeaderFrames(h));
  rec->frames_cut = ring::HeaderFramesCut(h);
  for (int i = 0; i < rec->nframes; ++i) rec->frames[i] = words[(c.pos + 4 + i) & mask];
  c.pos += ring::HeaderWords(h);
  words_read_ += ring::HeaderWords(h);
  // The writer's lines come from another core: ask for the ones a few
  // records ahead now, so that they are here when this lane comes round.
  __builtin_prefetch(&words[(c.pos + 32) & mask]);
  __builtin_prefetch(&words[(c.pos + 40) & mask]);
  if (lane == 0) c.floor = c.key;
  Peek(lane);  // (lane 0: an unfinished record next sets the blocker)
  if (heap_) {
    ready_.pop_back();
    if (c.ready) {
      ready_.push_back({c.key, lane});
      std::push_heap(ready_.begin(), ready_.end(), std::greater<>());
    }
  } else if (c.ready) {
    ready_[at].first = c.key;
  } else {
    ready_[at] = ready_.back();
    ready_.pop_back();
  }
  return true;
}

void RingReader::Release() { ReleaseTo(Positions(), RolledBackCounted()); }

std::vector<uint64_t> RingReader::PerLane(uint64_t Cursor::*field) const {
  std::vector<uint64_t> out;
  out.reserve(lanes_.size());
  for (const Cursor& c : lanes_) out.push_back(c.*field);
  return out;
}

std::vector<uint64_t> RingReader::Positions() const { return PerLane(&Cursor::pos); }

std::vector<uint64_t> RingReader::RolledBackCounted() const {
  return PerLane(&Cursor::rolled_back);
}

uint64_t RingReader::MaxUnreleased() const {
  uint64_t most = 0;
  for (const Cursor& c : lanes_) most = std::max(most, c.pos - c.released);
  return most;
}

void RingReader::ReleaseTo(const std::vector<uint64_t>& positions,
                           const std::vector<uint64_t>& rolled_back) {
  Guarded(0, [&] {
    ReleaseLanes(positions);
    ring::LaneDesc* descs = ring::Lanes(header_);
    for (size_t i = 1; i < rolled_back.size() && i < lanes_.size(); ++i) {
      if (rolled_back[i] > descs[i].rolled_back_sent.load(std::memory_order_relaxed)) {
        descs[i].rolled_back_sent.store(rolled_back[i], std::memory_order_relaxed);
      }
    }
    return 0;
  });
}

void RingReader::ResumeAt(const std::vector<uint64_t>& positions) {
  Guarded(0, [&] {
    ring::LaneDesc* descs = ring::Lanes(header_);
    for (size_t i = 0; i < positions.size() && i < lane_count_; ++i) {
      uint64_t tail = descs[i].tail.load(std::memory_order_acquire);
      uint64_t head = descs[i].head.load(std::memory_order_acquire);
      // Only forward, and never past what was written.
      if (positions[i] > tail && positions[i] <= head) StoreTail(descs[i], positions[i]);
    }
    return 0;
  });
}

uint64_t RingReader::Claim(std::atomic<uint64_t>* word, uint64_t fresh) {
  return Guarded(uint64_t{0}, [&] {
    uint64_t expected = 0;
    if (word->compare_exchange_strong(expected, fresh)) return fresh;
    return expected;
  });
}

uint64_t RingReader::ClaimProcessId(uint64_t fresh) {
  return Claim(&header_->forwarder_process_id, fresh);
}

uint64_t RingReader::ClaimStreamKey(uint64_t fresh) {
  return Claim(ring::StreamKey(header_), fresh);
}

void RingReader::TellLookedAt() {
  Guarded(0, [&] {
    header_->tracer_verdict.store(1, std::memory_order_release);
    return 0;
  });
  // (A shared futex: the waiter is another process. The address is the
  // mapping's, whatever the file holds: no fault.)
  syscall(SYS_futex, &header_->tracer_verdict, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void RingReader::ReleaseLanes(const std::vector<uint64_t>& positions) {
  ring::LaneDesc* descs = ring::Lanes(header_);
  for (uint32_t i = 0; i < lanes_.size() && i < positions.size(); ++i) {
    Cursor& c = lanes_[i];
    uint64_t to = std::min(positions[i], c.pos);
    if (to <= c.released) continue;
    c.released = to;
    StoreTail(descs[i], to);
  }
}

// Hands a lane's space before `to` back, and wakes a writer waiting for room
// (see RingWriter::WaitForRoom: tail first, then `waiting`).
void RingReader::StoreTail(ring::LaneDesc& desc, uint64_t to) {
  desc.tail.store(to, std::memory_order_seq_cst);
  if (desc.waiting.load(std::memory_order_seq_cst) != 0) {
    desc.waiting.store(0, std::memory_order_relaxed);
    desc.wake.fetch_add(1, std::memory_order_seq_cst);
    syscall(SYS_futex, &desc.wake, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
}

uint64_t RingReader::Uncommitted() {
  return Guarded(uint64_t{0}, [&] {
    ring::LaneDesc* descs = ring::Lanes(header_);
    uint64_t read = lanes_.empty() ? descs[0].tail.load(std::memory_order_acquire) : lanes_[0].pos;
    return descs[0].head.load(std::memory_order_acquire) - read;
  });
}

std::string RingReader::Maps() {
  // Allocated before the guarded reads: a jump out of them skips nothing
  // that owns memory.
  std::string out(ring::kMapsBytes, '\0');
  uint32_t len = Guarded(uint32_t{0}, [&] {
    for (int attempt = 0; attempt < 100; ++attempt) {
      uint64_t s1 = header_->maps_seq.load(std::memory_order_acquire);
      if (s1 & 1) continue;
      uint32_t n = header_->maps_len;
      if (n > ring::kMapsBytes) return uint32_t{0};
      memcpy(out.data(), header_->maps, n);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (header_->maps_seq.load(std::memory_order_relaxed) == s1) return n;
    }
    return uint32_t{0};
  });
  out.resize(len);
  return out;
}

uint64_t RingReader::unwind_failures() {
  unwind_failures_ = Guarded(unwind_failures_, [&] {
    return header_->unwind_failures.load(std::memory_order_relaxed);
  });
  return unwind_failures_;
}

uint64_t RingReader::dropped_events() {
  dropped_events_ = Guarded(dropped_events_, [&] {
    return header_->dropped_events.load(std::memory_order_relaxed);
  });
  return dropped_events_;
}

}  // namespace cgoheap::client
