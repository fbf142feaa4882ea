#include "client/ring_reader.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <functional>
#include <cstring>

namespace cgoheap::client {

RingReader::~RingReader() {
  if (header_ != nullptr && owned_) munmap(header_, bytes_);
}

bool RingReader::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < ring::kHeaderBytes) {
    close(fd);
    return false;
  }
  void* p = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return false;
  if (!Attach(static_cast<ring::RingHeader*>(p), st.st_size)) {
    munmap(p, st.st_size);
    return false;
  }
  owned_ = true;
  return true;
}

bool RingReader::Attach(ring::RingHeader* h, size_t bytes) {
  uint64_t words = h->lane_words;
  uint32_t lanes = h->lane_count;
  if (h->magic != ring::kMagic || h->version != ring::kVersion ||
      h->header_bytes != ring::kHeaderBytes || words < 64 || (words & (words - 1)) != 0 ||
      lanes < 1 || lanes > ring::kMaxLanes || ring::RingFileBytes(lanes, words) != bytes ||
      (h->clock != static_cast<uint32_t>(ring::Clock::kTsc) &&
       h->clock != static_cast<uint32_t>(ring::Clock::kCounter))) {
    return false;
  }
  header_ = h;
  bytes_ = bytes;
  lane_words_ = words;
  lane_count_ = lanes;
  return true;
}

uint64_t* RingReader::Lane(uint32_t lane) const {
  char* base = reinterpret_cast<char*>(header_) + ring::kHeaderBytes +
               size_t{lane_count_} * sizeof(ring::LaneDesc);
  return reinterpret_cast<uint64_t*>(base) + size_t{lane} * lane_words_;
}

// A round: read the cut, then every lane's head. Everything published before
// its head was read is eligible if its key is below the cut; whatever a
// record depends on (an allocation its free needs) was published before that
// record's key was read, so before the cut, so before the heads: it is in
// this round or an earlier one. Records are then taken smallest key first.
void RingReader::StartRound() {
  ring::RingHeader* h = header_;
  cut_ = h->clock == static_cast<uint32_t>(ring::Clock::kTsc)
             ? ring::TscCut()
             : h->counter.load(std::memory_order_seq_cst);
  uint32_t used = std::min(h->lanes_used.load(std::memory_order_acquire), lane_count_);
  ring::LaneDesc* descs = ring::Lanes(h);
  while (lanes_.size() < used) {
    Cursor c;
    c.pos = c.released = descs[lanes_.size()].tail.load(std::memory_order_acquire);
    lanes_.push_back(c);
  }
  ready_.clear();
  for (uint32_t i = 0; i < lanes_.size(); ++i) {
    lanes_[i].limit = descs[i].head.load(std::memory_order_acquire);
    if (round_hook_ != nullptr) round_hook_(i, round_hook_arg_);
    Peek(i);
    if (lanes_[i].ready) ready_.push_back({lanes_[i].key, i});
    // Lane 0 is published as it is reserved: a record still being written
    // hides those behind it, which other lanes' records may depend on (the
    // free whose address another thread then allocates). Its key is at
    // least the last one taken from lane 0 (keys rise with positions there),
    // so this round takes nothing from at or beyond that key.
    if (i == 0 && lanes_[0].unfinished && !writers_gone_) {
      cut_ = std::min(cut_, lanes_[0].floor);
    }
  }
  std::make_heap(ready_.begin(), ready_.end(), std::greater<>());
}

// Whether lane's next record can be taken this round, and its key.
void RingReader::Peek(uint32_t lane) {
  Cursor& c = lanes_[lane];
  c.ready = false;
  c.unfinished = false;
  if (corrupt_ || c.pos >= c.limit) return;
  const uint64_t cap = lane_words_, mask = cap - 1;
  uint64_t* words = Lane(lane);
  uint64_t h = std::atomic_ref<uint64_t>(words[c.pos & mask]).load(std::memory_order_acquire);
  if (!ring::IsHeaderAt(h, c.pos, cap)) {
    // Lane 0: reserved, not committed yet. An owned lane publishes its head
    // after the record: a missing header there is damage.
    if (lane != 0) corrupt_ = true;
    c.unfinished = true;
    return;
  }
  unsigned n = ring::HeaderWords(h), nframes = ring::HeaderFrames(h);
  if (nframes > ring::kMaxFrames || n != ring::kRecordFixedWords + nframes ||
      c.pos + n > c.limit) {
    corrupt_ = true;  // a writer outside the protocol: stop rather than guess
    return;
  }
  uint64_t key = words[(c.pos + 1) & mask];
  c.header = h;  // Next uses this, not a second read the target could change
  // Lane 0's writers read their keys just before reserving, so keys rise
  // with positions there too (RingWriter::PublishShared); should one not,
  // the lane's order wins.
  if (lane == 0) key = std::max(key, c.floor);
  if (key >= cut_) return;
  c.key = key;
  c.ready = true;
}

bool RingReader::Next(RingRecord* rec) {
  for (bool fresh = false;; fresh = true) {
    if (corrupt_) return false;
    if (!ready_.empty()) break;
    if (fresh) return false;
    StartRound();
  }
  // The ready lane with the smallest key (a min-heap: many lanes may be ready).
  std::pop_heap(ready_.begin(), ready_.end(), std::greater<>());
  uint32_t lane = ready_.back().second;
  ready_.pop_back();
  Cursor& c = lanes_[lane];
  const uint64_t mask = lane_words_ - 1;
  const uint64_t* words = Lane(lane);
  const uint64_t h = c.header;  // checked by Peek: at most kMaxFrames frames
  rec->key = c.key;
  rec->lane = lane;
  rec->kind = ring::HeaderKind(h);
  rec->api = ring::HeaderApi(h);
  rec->address = words[(c.pos + 2) & mask];
  rec->size = words[(c.pos + 3) & mask];
  rec->nframes = static_cast<int>(ring::HeaderFrames(h));
  for (int i = 0; i < rec->nframes; ++i) rec->frames[i] = words[(c.pos + 4 + i) & mask];
  c.pos += ring::HeaderWords(h);
  if (lane == 0) c.floor = c.key;
  Peek(lane);
  if (c.ready) {
    ready_.push_back({c.key, lane});
    std::push_heap(ready_.begin(), ready_.end(), std::greater<>());
  }
  return true;
}

void RingReader::Release() {
  ring::LaneDesc* descs = ring::Lanes(header_);
  for (uint32_t i = 0; i < lanes_.size(); ++i) {
    Cursor& c = lanes_[i];
    if (c.pos == c.released) continue;
    c.released = c.pos;
    descs[i].tail.store(c.pos, std::memory_order_seq_cst);
    // See RingWriter::WaitForRoom: tail first, then `waiting`.
    if (descs[i].waiting.load(std::memory_order_seq_cst) != 0) {
      descs[i].waiting.store(0, std::memory_order_relaxed);
      descs[i].wake.fetch_add(1, std::memory_order_seq_cst);
      syscall(SYS_futex, &descs[i].wake, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
    }
  }
}

uint64_t RingReader::Uncommitted() const {
  uint64_t read = lanes_.empty() ? ring::Lanes(header_)[0].tail.load(std::memory_order_acquire)
                                 : lanes_[0].pos;
  return ring::Lanes(header_)[0].head.load(std::memory_order_acquire) - read;
}

std::string RingReader::Maps() const {
  for (int attempt = 0; attempt < 100; ++attempt) {
    uint64_t s1 = header_->maps_seq.load(std::memory_order_acquire);
    if (s1 & 1) continue;
    uint32_t len = header_->maps_len;
    if (len > ring::kMapsBytes) return {};
    std::string out(header_->maps, len);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (header_->maps_seq.load(std::memory_order_relaxed) == s1) return out;
  }
  return {};
}

uint64_t RingReader::unwind_failures() const {
  return header_->unwind_failures.load(std::memory_order_relaxed);
}

uint64_t RingReader::dropped_events() const {
  return header_->dropped_events.load(std::memory_order_relaxed);
}

}  // namespace cgoheap::client
