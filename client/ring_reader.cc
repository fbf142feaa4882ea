#include "client/ring_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
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
  uint64_t words = h->capacity_words;
  if (h->magic != ring::kMagic || h->version != ring::kVersion ||
      h->header_bytes != ring::kHeaderBytes || words == 0 || (words & (words - 1)) != 0 ||
      ring::RingFileBytes(words) != bytes) {
    return false;
  }
  header_ = h;
  bytes_ = bytes;
  pos_ = released_ = h->tail.load(std::memory_order_acquire);
  return true;
}

bool RingReader::Next(RingRecord* rec) {
  if (corrupt_) return false;
  // Never look past what writers reserved: a slot beyond it may still hold
  // a record this reader consumed a lap ago and has not released yet.
  if (pos_ >= header_->reserve.load(std::memory_order_acquire)) return false;
  uint64_t* words = ring::RingWords(header_);
  const uint64_t mask = header_->capacity_words - 1;
  uint64_t h = std::atomic_ref<uint64_t>(words[pos_ & mask]).load(std::memory_order_acquire);
  if (!ring::IsHeaderAt(h, pos_, header_->capacity_words)) return false;  // not written yet
  unsigned n = ring::HeaderWords(h), nframes = ring::HeaderFrames(h);
  if (n < ring::kRecordFixedWords || nframes > ring::kMaxFrames ||
      n != ring::kRecordFixedWords + nframes) {
    corrupt_ = true;  // a writer outside the protocol: stop rather than guess
    return false;
  }
  rec->kind = ring::HeaderKind(h);
  rec->api = ring::HeaderApi(h);
  rec->address = words[(pos_ + 1) & mask];
  rec->size = words[(pos_ + 2) & mask];
  rec->nframes = static_cast<int>(nframes);
  for (unsigned i = 0; i < nframes; ++i) rec->frames[i] = words[(pos_ + 3 + i) & mask];
  pos_ += n;
  return true;
}

void RingReader::Release() {
  if (pos_ == released_) return;
  released_ = pos_;
  header_->tail.store(pos_, std::memory_order_release);
}

uint64_t RingReader::Uncommitted() const {
  return header_->reserve.load(std::memory_order_acquire) - pos_;
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

uint64_t RingReader::dropped_events() const {
  return header_->dropped_events.load(std::memory_order_relaxed);
}

}  // namespace cgoheap::client
