#include "client/exit_scan.h"

#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <optional>
#include <sstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "symbolize/elf_image.h"

namespace cgoheap::client {
namespace {

// Static TLS reaches at most this far below the thread pointer (a bound on
// what a DTV entry may claim).
constexpr uint64_t kMaxStaticTls = uint64_t{64} << 20;
constexpr size_t kChunk = 1 << 20;  // bytes read at a time

// Reads [addr, addr+len) of pid into buf; returns the bytes read from the
// start (a page that cannot be read ends the read early).
size_t ReadRemote(pid_t pid, uint64_t addr, char* buf, size_t len) {
  iovec local{buf, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  return n < 0 ? 0 : static_cast<size_t>(n);
}

class Marker {
 public:
  Marker(pid_t pid, const std::vector<LiveBlock>& blocks, const ExitScanOptions& options)
      : pid_(pid), blocks_(blocks), options_(options), buf_(kChunk / 8) {
    order_.resize(blocks.size());
    std::iota(order_.begin(), order_.end(), size_t{0});
    std::sort(order_.begin(), order_.end(),
              [&](size_t a, size_t b) { return blocks[a].address < blocks[b].address; });
    starts_.reserve(order_.size());
    for (size_t i : order_) starts_.push_back(blocks[i].address);
    lead_order_ = order_;
    std::stable_sort(lead_order_.begin(), lead_order_.end(),
                     [&](size_t a, size_t b) { return blocks[a].seq < blocks[b].seq; });
    marked_.assign(blocks.size(), false);
    for (const LiveBlock& b : blocks) {
      lo_ = std::min(lo_, b.address);
      hi_ = std::max(hi_, b.address + std::max<uint64_t>(b.size, 1));
    }
    deadline_ = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(options.max_seconds));
  }

  // The block (index into blocks) that holds address, or -1.
  ptrdiff_t Holder(uint64_t address) const {
    if (address < lo_ || address >= hi_) return -1;
    auto it = std::upper_bound(starts_.begin(), starts_.end(), address);
    if (it == starts_.begin()) return -1;
    size_t i = order_[static_cast<size_t>(it - starts_.begin()) - 1];
    const LiveBlock& b = blocks_[i];
    return address - b.address < std::max<uint64_t>(b.size, 1) ? static_cast<ptrdiff_t>(i) : -1;
  }

  // Scans [start, end) of the process: marks what it points to. False once
  // a limit is reached.
  bool ScanRange(uint64_t start, uint64_t end, uint64_t* counted) {
    start = (start + 7) & ~uint64_t{7};
    for (uint64_t at = start; at + 8 <= end;) {
      if (read_ >= options_.max_bytes) {
        stop_ = absl::StrCat("it would read more than ", options_.max_bytes >> 20, " MiB");
        return false;
      }
      if (std::chrono::steady_clock::now() > deadline_) {
        stop_ = absl::StrCat("it took longer than ", options_.max_seconds, " s");
        return false;
      }
      const size_t want = static_cast<size_t>(std::min<uint64_t>(end - at, kChunk)) & ~size_t{7};
      size_t got = ReadRemote(pid_, at, reinterpret_cast<char*>(buf_.data()), want);
      if (got < want) {
        // A page that cannot be read (a hole, a guard page): go on from the
        // next page.
        got &= ~size_t{7};
        Words(got / 8);
        read_ += got;
        *counted += got;
        at = ((at + got) | 4095) + 1;
        continue;
      }
      Words(want / 8);
      read_ += want;
      *counted += want;
      at += want;
    }
    return true;
  }

  // Scans every reachable block, transitively.
  bool Drain(uint64_t* counted) {
    while (!work_.empty()) {
      size_t i = work_.back();
      work_.pop_back();
      if (!ScanRange(blocks_[i].address, blocks_[i].address + blocks_[i].size, counted)) {
        return false;
      }
    }
    return true;
  }

  // After the roots: tells the lost blocks that only other lost blocks point
  // to ("indirectly lost") from those nothing points to, as valgrind does.
  // Each lost block not yet reached leads a group: what it reaches, and any
  // leader reached before, join it (a lost cycle keeps one leader). The
  // blocks lead in allocation order (valgrind goes by address, which its
  // own allocator hands out in about that order and glibc's does not): the
  // leader of a cycle is the block allocated first. False once a limit is
  // reached.
  bool SplitLost(uint64_t* counted) {
    indirect_.assign(blocks_.size(), false);
    std::vector<bool> led(blocks_.size(), false);
    for (size_t i : lead_order_) {
      if (marked_[i] || led[i] || indirect_[i]) continue;
      led[i] = true;
      leader_ = i;
      flooding_ = true;
      flood_.push_back(i);
      while (!flood_.empty()) {
        size_t j = flood_.back();
        flood_.pop_back();
        if (!ScanRange(blocks_[j].address, blocks_[j].address + blocks_[j].size, counted)) {
          flooding_ = false;
          return false;
        }
      }
      flooding_ = false;
    }
    return true;
  }

  const std::string& stop() const { return stop_; }
  // The blocks' addresses, ascending.
  const std::vector<uint64_t>& starts() const { return starts_; }
  std::vector<bool> TakeMarks() { return std::move(marked_); }
  std::vector<bool> TakeIndirect() { return std::move(indirect_); }

 private:
  // Whether address, inside block b, is where glibc's next chunk begins.
  // A chunk is its block plus 8 bytes rounded up to 16 (at least 32), and a
  // block may use the first 8 bytes of the next chunk's header: so a block
  // of n bytes whose n mod 16 is 1 to 8 ends just past the next chunk's
  // address. glibc's own pointers to that chunk (the main arena's top,
  // bins and fast bins, in libc's data) are not the program's: with them,
  // a 17-byte block allocated last on the main thread looked still
  // reachable. Once the arena is found its top and bins are no root
  // (FindMainArena); this covers its fast bins, and an arena not found.
  // Taken for one only when the block's own size word (the 8
  // bytes before it) says its chunk ends exactly there; a program's own
  // pointer to that very byte of such a block is not counted (valgrind
  // and LeakSanitizer, with allocators of their own, do not need this).
  bool NextChunkOf(const LiveBlock& b, uint64_t address) const {
    const uint64_t offset = address - b.address;
    if (offset == 0 || offset % 16 != 0 || offset + 8 < b.size) return false;
    uint64_t size_word = 0;
    if (ReadRemote(pid_, b.address - 8, reinterpret_cast<char*>(&size_word), 8) != 8) return false;
    return (size_word & ~uint64_t{7}) == offset + 16;
  }

  void Words(size_t n) {
    for (size_t k = 0; k < n; ++k) {
      const uint64_t w = buf_[k];
      if (w < lo_ || w >= hi_) continue;
      ptrdiff_t at = Holder(w);
      if (at < 0) continue;
      const size_t i = static_cast<size_t>(at);
      if (NextChunkOf(blocks_[i], w)) continue;
      if (flooding_) {  // SplitLost: from a lost block
        if (marked_[i] || indirect_[i] || i == leader_) continue;
        indirect_[i] = true;  // (a leader before this one joins this group)
        flood_.push_back(i);
        continue;
      }
      if (marked_[i]) continue;
      marked_[i] = true;
      work_.push_back(i);
    }
  }

  pid_t pid_;
  const std::vector<LiveBlock>& blocks_;
  const ExitScanOptions& options_;
  std::vector<uint64_t> buf_;
  std::vector<size_t> order_;      // block indexes by address
  std::vector<size_t> lead_order_;  // by allocation order, then address (SplitLost)
  std::vector<uint64_t> starts_;   // their addresses, ascending
  std::vector<bool> marked_;
  std::vector<size_t> work_;       // marked, not yet scanned
  // SplitLost's state: lost blocks reached from another lost block, the
  // current group's leader, and what of the group is still to scan.
  std::vector<bool> indirect_;
  bool flooding_ = false;
  size_t leader_ = 0;
  std::vector<size_t> flood_;
  uint64_t lo_ = UINT64_MAX, hi_ = 0;
  uint64_t read_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  std::string stop_;
};

// glibc's thread descriptor (struct pthread, at the thread pointer) starts
// with tcbhead_t: tcb (itself), dtv, self (itself).
bool IsThreadDescriptor(const uint64_t* words, uint64_t at) {
  return words[0] == at && words[2] == at && words[1] != 0 && words[1] % 8 == 0;
}

// How far below the thread pointer tp the static thread-local storage
// reaches: the lowest block among the DTV's modules (glibc's TLS variant
// II: each module's static block lies at tp minus its offset, the same in
// every thread). 0 when the DTV cannot be read.
uint64_t StaticTlsBelow(pid_t pid, uint64_t tp) {
  uint64_t head[3] = {};
  if (ReadRemote(pid, tp, reinterpret_cast<char*>(head), sizeof head) != sizeof head ||
      !IsThreadDescriptor(head, tp)) {
    return 0;
  }
  // tcb->dtv points at dtv[0] (the generation); dtv[-1] is the length;
  // dtv[i], i >= 1: {val, to_free}, val the module's block.
  const uint64_t dtv = head[1];
  uint64_t length = 0;
  if (ReadRemote(pid, dtv - 16, reinterpret_cast<char*>(&length), 8) != 8) return 0;
  length = std::min<uint64_t>(length, 4096);
  std::vector<uint64_t> entries(2 * length);
  const size_t want = entries.size() * 8;
  const size_t got = ReadRemote(pid, dtv + 16, reinterpret_cast<char*>(entries.data()), want);
  uint64_t below = 0;
  for (size_t i = 0; i < got / 16; ++i) {
    const uint64_t val = entries[2 * i];
    if (val < tp && tp - val <= kMaxStaticTls) below = std::max(below, tp - val);
  }
  return below;
}

// Where a thread's descriptor lies in the top of its stack mapping (glibc
// puts it and the static TLS there), or 0.
uint64_t FindThreadDescriptor(pid_t pid, const Mapping& m) {
  const uint64_t len = std::min<uint64_t>(m.end - m.start, 64 << 10);
  std::vector<uint64_t> top(len / 8);
  const uint64_t base = m.end - len;
  if (ReadRemote(pid, base, reinterpret_cast<char*>(top.data()), len) != len) return 0;
  for (size_t i = top.size() >= 3 ? top.size() - 3 : 0; i-- > 0;) {
    const uint64_t at = base + 8 * i;
    if (at % 64 == 0 && IsThreadDescriptor(&top[i], at)) return at;
  }
  return 0;
}

// glibc's C library (libc.so.6; libc-2.N.so before 2.34), by its path.
std::string_view BaseName(std::string_view path) { return path.substr(path.rfind('/') + 1); }
bool IsLibc(std::string_view path) {
  return path.starts_with("/") &&
         (BaseName(path).starts_with("libc.so") || BaseName(path).starts_with("libc-"));
}

// A field's place as glibc describes it for libthread_db (nptl_db's
// db_desc_t, exported by libc.so, by libpthread.so before 2.34:
// {size in bits, count, offset}), read from the library's file; nullopt
// when it has no such description, or one of another size.
std::optional<uint32_t> DbFieldOffset(const ElfImage& elf, const char* name, uint32_t bits) {
  uint64_t value = 0, size = 0;
  ElfSection section;
  uint32_t desc[3] = {};
  if (!elf.FindSymbol(name, &value, &size) || size != sizeof desc ||
      !elf.SectionAt(value, &section) || section.data == nullptr ||
      section.size < sizeof desc || value - section.addr > section.size - sizeof desc) {
    return std::nullopt;
  }
  memcpy(desc, section.data + (value - section.addr), sizeof desc);
  if (desc[0] != bits || desc[1] != 1 || desc[2] % 8 != 0 || desc[2] >= (1u << 20)) {
    return std::nullopt;
  }
  return desc[2];
}

// Appends the nodes of the circular list (list_t: next, prev) at head, less
// link (where the list runs through each node). False when it cannot be
// read whole.
bool WalkList(pid_t pid, uint64_t head, uint64_t link, std::vector<uint64_t>* out) {
  uint64_t node = 0;
  if (ReadRemote(pid, head, reinterpret_cast<char*>(&node), 8) != 8) return false;
  for (int steps = 0; node != head; ++steps) {
    if (steps > (1 << 16) || node % 8 != 0 || node < link) return false;
    out->push_back(node - link);
    if (ReadRemote(pid, node, reinterpret_cast<char*>(&node), 8) != 8) return false;
  }
  return true;
}

// What the scan needs to know of glibc's threads, from the descriptions
// glibc exports for debuggers (libthread_db's):
// - arg_offset: where, in a thread's descriptor (struct pthread), the
//   argument pthread_create passed to its function lies (0: unknown). That
//   word is no root: the function owns its argument and often frees it at
//   once (cgo's runtime frees the thread-start record its new threads get,
//   as thread pools free their tasks), and glibc's allocator soon hands the
//   chunk out again: with it a root, a lost 5-byte C string the next cgo
//   call allocated in that chunk looked still reachable (1 run in about
//   300 of a small Go program). A block the function still uses lives in
//   its frames, which are no root either. The argument is the word after
//   the start routine (_thread_db_pthread_start_routine) in every glibc.
// - live: the descriptors of the threads not yet gone (sorted; known says
//   whether it could be read). A thread that ended leaves its stack in
//   glibc's cache, its descriptor and static TLS at the top holding what
//   they held: no root. glibc 2.34 and later keep the stacks in use on two
//   lists in the loader's _rtld_global (_dl_stack_used, _dl_stack_user, the
//   main thread's there), which libc's __nptl_rtld_global points to; a
//   process's other threads are still on them while it exits (they are
//   killed, not ended). Before 2.34 the lists are libpthread's own: unknown.
struct GlibcThreads {
  uint64_t arg_offset = 0;
  bool known = false;
  std::vector<uint64_t> live;
};
GlibcThreads ReadGlibcThreads(pid_t pid, const std::vector<Mapping>& maps) {
  GlibcThreads out;
  std::string tried;
  for (const Mapping& m : maps) {
    const bool libpthread = m.path.starts_with("/") && BaseName(m.path).starts_with("libpthread");
    if (m.path == tried || !(IsLibc(m.path) || libpthread)) continue;
    tried = m.path;
    ElfImage elf;
    if (!elf.Open(m.path.c_str())) continue;
    if (auto start = DbFieldOffset(elf, "_thread_db_pthread_start_routine", 64);
        start && *start < 4096 && out.arg_offset == 0) {
      out.arg_offset = *start + 8;
    }
    auto used = DbFieldOffset(elf, "_thread_db_rtld_global__dl_stack_used", 128);
    auto user = DbFieldOffset(elf, "_thread_db_rtld_global__dl_stack_user", 128);
    auto link = DbFieldOffset(elf, "_thread_db_pthread_list", 128);
    uint64_t var = 0, var_size = 0, rtld = 0;
    // The library's first mapping (offset 0) is where its addresses start.
    if (!out.known && used && user && link && m.offset == 0 && elf.IsSharedObject() &&
        elf.FindSymbol("__nptl_rtld_global", &var, &var_size) && var_size == 8 &&
        ReadRemote(pid, m.start + var, reinterpret_cast<char*>(&rtld), 8) == 8 && rtld != 0) {
      std::vector<uint64_t> live;
      if (WalkList(pid, rtld + *used, *link, &live) && WalkList(pid, rtld + *user, *link, &live)) {
        std::sort(live.begin(), live.end());
        out.live = std::move(live);
        out.known = true;
      }
    }
  }
  return out;
}

// glibc's main arena (struct malloc_state, in libc's data) keeps, after
// its fast bins, top, last_remainder and the bins' 254 links: top and the
// bins point to free chunks, last_remainder to the chunk the latest split
// left over, long after that chunk was handed out again. That stale word
// lies anywhere in the heap: with it a root, a 120,008-byte block made
// from an old remainder looked still reachable (last_remainder pointed 48
// bytes into it). The arena is found, in the data (ranges) of the objects,
// as the word that holds its top chunk (top, known from the walk of
// [heap]) followed by last_remainder and 127 bin pairs, each a bin's first
// and last chunks in [heap] or, empty, both pointing 16 bytes before the
// pair itself (the list's head). Returns where its top word lies, or 0.
constexpr uint64_t kArenaWords = 2 + 254;  // top, last_remainder, bins
uint64_t FindMainArena(pid_t pid, const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                       const Mapping& heap, uint64_t top) {
  auto in_heap = [&](uint64_t w) { return w >= heap.start && w < heap.end; };
  std::vector<uint64_t> w;
  for (const auto& [from, to] : ranges) {
    if (to - from > (uint64_t{64} << 20) || to - from < 8 * kArenaWords) continue;
    w.resize((to - from) / 8);
    const size_t got = ReadRemote(pid, from, reinterpret_cast<char*>(w.data()), w.size() * 8) / 8;
    for (size_t i = 0; i + kArenaWords <= got; ++i) {
      if (w[i] != top) continue;
      bool arena = true;
      size_t empty = 0;
      for (size_t b = i + 2; arena && b < i + kArenaWords; b += 2) {
        const uint64_t self = from + 8 * b - 16;
        if (w[b] == self && w[b + 1] == self) {
          ++empty;
        } else {
          arena = in_heap(w[b]) && in_heap(w[b + 1]);
        }
      }
      if (arena && empty > 0) return from + 8 * i;
    }
  }
  return 0;
}

// ranges less holes (holes apart from each other; the result in ranges'
// order).
std::vector<std::pair<uint64_t, uint64_t>> Without(
    const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
    std::vector<std::pair<uint64_t, uint64_t>> holes) {
  std::sort(holes.begin(), holes.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  out.reserve(ranges.size() + holes.size());
  for (const auto& range : ranges) {
    uint64_t from = range.first;
    const uint64_t to = range.second;
    auto it = std::partition_point(holes.begin(), holes.end(),
                                   [from](const auto& h) { return h.second <= from; });
    for (; it != holes.end() && it->first < to; ++it) {
      if (from < it->first) out.emplace_back(from, it->first);
      from = std::max(from, it->second);
    }
    if (from < to) out.emplace_back(from, to);
  }
  return out;
}

}  // namespace

// glibc's main arena ([heap]) also holds blocks the agent never saw: those
// allocated before it started (the loader's, and library constructors'
// that ran before the agent's: GLib's type and quark tables, C++ static
// initializers) or through __libc_malloc. They may hold the only pointer
// to a block it did see, so they are roots too. They are found by walking
// the arena's chunks (size word at +8, low bits flags; a chunk is in use
// when the next one's PREV_INUSE bit is set); the user's memory starts 16
// bytes into a chunk. A chunk freed into a thread cache still looks in use;
// but its second word holds the caches' key (glibc 2.29 and later: random
// since 2.34), which the main thread's cache (the arena's first chunk:
// uint16_t counts[64], then the 64 bins' first entries) shows: chunks
// holding it are left out, and so are chunks that link to another chunk
// of their size as a fast bin's do.
// Returns the ranges of the in-use chunks that are not live blocks.
std::vector<std::pair<uint64_t, uint64_t>> UnseenChunks(pid_t pid, const Mapping& heap,
                                                        const std::vector<uint64_t>& starts,
                                                        uint64_t* top) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  if (top != nullptr) *top = 0;
  const uint64_t len = heap.end - heap.start;
  if (len > (uint64_t{1} << 30)) return out;  // too big to read at once: its chunks are left out
  std::vector<uint64_t> w(len / 8);
  if (ReadRemote(pid, heap.start, reinterpret_cast<char*>(w.data()), len) != len) return out;
  auto size_at = [&](uint64_t chunk) { return w[(chunk - heap.start) / 8 + 1]; };
  auto word_at = [&](uint64_t at) { return w[(at - heap.start) / 8]; };
  constexpr uint64_t kTcacheBins = 64, kTcacheChunk = 0x290;
  std::optional<uint64_t> key;
  if (len >= kTcacheChunk && (size_at(heap.start) & ~uint64_t{7}) == kTcacheChunk) {
    const uint64_t user = heap.start + 16;
    for (uint64_t i = 0; i < kTcacheBins && !key; ++i) {
      const uint64_t count = word_at(user + i / 4 * 8) >> (i % 4 * 16) & 0xffff;
      const uint64_t entry = word_at(user + 2 * kTcacheBins + 8 * i);
      if (count != 0 && entry % 16 == 0 && entry > user && entry + 16 <= heap.end) {
        key = word_at(entry + 8);
      }
    }
  }
  // A chunk freed into a fast bin looks in use too; its first word links
  // it to the next chunk of its bin (same size; 0 at the end), mangled
  // since glibc 2.32 as (the word's own address >> 12) ^ the link. A
  // mangled link stays within 64 KiB of a heap address, so it would make
  // whatever large block lies there look reachable.
  auto in_fast_bin = [&](uint64_t chunk, uint64_t size) {
    const uint64_t raw = word_at(chunk + 16);
    const uint64_t unmangled = raw ^ ((chunk + 16) >> 12);
    if (unmangled == 0) return true;  // the bin's last chunk (its word is nonzero)
    auto links_to_its_size = [&](uint64_t link) {
      return link % 16 == 0 && link >= heap.start && link + 16 <= heap.end &&
             (size_at(link) & ~uint64_t{7}) == size;
    };
    return links_to_its_size(unmangled) || links_to_its_size(raw);  // before 2.32: raw
  };
  for (uint64_t chunk = heap.start; chunk + 32 <= heap.end;) {
    const uint64_t size = size_at(chunk) & ~uint64_t{7};
    if (size < 32 || size % 16 != 0 || size > heap.end - chunk) break;  // not a chunk: stop
    const uint64_t next = chunk + size;
    if (next + 16 > heap.end) {  // the top chunk: free space
      if (top != nullptr && next == heap.end) *top = chunk;
      break;
    }
    const bool in_use = size_at(next) & 1;
    const bool cached = key && word_at(chunk + 24) == *key;  // freed, in a thread cache
    if (in_use && !cached && !in_fast_bin(chunk, size) &&
        !std::binary_search(starts.begin(), starts.end(), chunk + 16)) {
      out.emplace_back(chunk + 16, next + 8);  // with the next chunk's first word, which is ours
    }
    chunk = next;
  }
  return out;
}

std::vector<Mapping> ParseMaps(const std::string& text) {
  std::vector<Mapping> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    Mapping m;
    char perms[8] = {};
    unsigned long long start = 0, end = 0, offset = 0, inode = 0;
    unsigned dev_major = 0, dev_minor = 0;
    int path_at = 0;
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset,
               &dev_major, &dev_minor, &inode, &path_at) < 7) {
      continue;
    }
    m.start = start;
    m.end = end;
    m.read = perms[0] == 'r';
    m.write = perms[1] == 'w';
    m.inode = inode;
    m.offset = offset;
    if (path_at > 0 && static_cast<size_t>(path_at) <= line.size()) m.path = line.substr(path_at);
    // The kernel may split [heap] in two mappings alike (seen in a test's
    // child forked from a process that had run many threads): the walk of
    // its chunks needs it whole.
    if (Mapping* prev = out.empty() ? nullptr : &out.back();
        prev != nullptr && m.path == "[heap]" && prev->path == "[heap]" && prev->end == m.start &&
        prev->read == m.read && prev->write == m.write) {
      prev->end = m.end;
      continue;
    }
    out.push_back(std::move(m));
  }
  return out;
}

ExitScanResult ScanReachable(pid_t pid, const std::vector<LiveBlock>& blocks,
                             const ExitScanOptions& options) {
  ExitScanResult r;
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::stringstream text;
  text << in.rdbuf();
  std::vector<Mapping> maps = ParseMaps(text.str());
  if (maps.empty()) {
    r.skipped = "its memory map could not be read";
    return r;
  }
  if (blocks.empty()) {  // nothing to tell apart
    r.done = true;
    return r;
  }
  Marker marker(pid, blocks, options);
  const std::vector<uint64_t>& starts = marker.starts();
  auto skipped_file = [&](const std::string& path) {
    for (const std::string& f : options.skip_files) {
      if (!f.empty() && (path == f || path.starts_with(f + "/") ||
                         path.starts_with(f + " (deleted)"))) {
        return true;
      }
    }
    return false;
  };
  // The roots, as [from, to) ranges.
  std::vector<std::pair<uint64_t, uint64_t>> roots;
  // Words in them that are not the program's pointers: glibc's own.
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  // Where glibc's main arena may lie: libc's data first.
  std::vector<std::pair<uint64_t, uint64_t>> object_data, libc_data;
  const Mapping* main_heap = nullptr;
  uint64_t top = 0;
  const uint64_t tls_below = options.main_tp != 0 ? StaticTlsBelow(pid, options.main_tp) : 0;
  const GlibcThreads threads = ReadGlibcThreads(pid, maps);
  for (size_t k = 0; k < maps.size(); ++k) {
    const Mapping& m = maps[k];
    if (!m.read || !m.write) continue;  // code, read-only data, reserved space
    const Mapping* before = k > 0 && maps[k - 1].end == m.start ? &maps[k - 1] : nullptr;
    if (m.path == "[heap]") {
      ++r.heap_mappings;
      main_heap = &m;
      for (const auto& range : UnseenChunks(pid, m, starts, &top)) {
        ++r.unseen_chunks;
        roots.push_back(range);
      }
    } else if (m.path == "[stack]") {
      // The main thread's: from where it called exit, up.
      if (options.main_sp >= m.start && options.main_sp < m.end) {
        roots.emplace_back(options.main_sp, m.end);
      }
    } else if (m.path.starts_with("/") && !m.path.starts_with("/dev/") && !skipped_file(m.path)) {
      roots.emplace_back(m.start, m.end);  // an object's data
      (IsLibc(m.path) ? libc_data : object_data).push_back(roots.back());
    } else if (!m.path.empty()) {
      // [vvar], [vdso], a device, cgoheap's own files
    } else if (before != nullptr && before->write && before->path.starts_with("/") &&
               !before->path.starts_with("/dev/") && !skipped_file(before->path)) {
      roots.emplace_back(m.start, m.end);  // the bss after an object's data
      (IsLibc(before->path) ? libc_data : object_data).push_back(roots.back());
    } else if (options.main_tp >= m.start && options.main_tp < m.end) {
      roots.emplace_back(m.start, m.end);  // the main thread's TLS, with the loader's data
    } else if (before != nullptr && !before->read && !before->write &&
               before->end - before->start <= (1 << 20)) {
      // A thread's stack above its guard page, its descriptor at the top:
      // only the static TLS and the descriptor count (but for the argument
      // its function was started with).
      if (uint64_t tp = FindThreadDescriptor(pid, m); tp == 0) {
        // not a thread's stack
      } else if (threads.known && !std::binary_search(threads.live.begin(), threads.live.end(), tp)) {
        ++r.ended_threads;  // in glibc's cache of stacks
      } else {
        ++r.thread_stacks;
        roots.emplace_back(std::max(m.start, tp - std::min(tls_below, tp)), m.end);
        if (threads.arg_offset != 0) {
          holes.emplace_back(tp + threads.arg_offset, tp + threads.arg_offset + 8);
        }
      }
    }
    // Other anonymous memory is no root: glibc's thread arenas and large
    // blocks (only live blocks count there), Go's heap and goroutine
    // stacks (a Go object that held a C pointer may be garbage not yet
    // collected: a leak through a Go variable would look reachable).
  }
  if (top != 0 && r.heap_mappings == 1) {
    libc_data.insert(libc_data.end(), object_data.begin(), object_data.end());
    if (uint64_t arena = FindMainArena(pid, libc_data, *main_heap, top); arena != 0) {
      holes.emplace_back(arena, arena + 8 * kArenaWords);
      r.main_arena = arena;
    }
  }
  roots = Without(roots, std::move(holes));
  for (const auto& [from, to] : roots) {
    // Around the live blocks inside (a large block's mapping may have merged
    // with an object's bss): a block counts only once it is reached.
    auto end_of = [&](ptrdiff_t i) {
      const LiveBlock& b = blocks[static_cast<size_t>(i)];
      return b.address + std::max<uint64_t>(b.size, 1);
    };
    uint64_t at = from;
    if (ptrdiff_t i = marker.Holder(from); i >= 0) at = end_of(i);
    for (auto it = std::lower_bound(starts.begin(), starts.end(), at); at < to; ++it) {
      const uint64_t next = it != starts.end() && *it < to ? *it : to;
      if (next > at && !marker.ScanRange(at, next, &r.root_bytes)) break;
      if (next == to) break;
      at = std::max(at, end_of(marker.Holder(*it)));
    }
    if (!marker.stop().empty() || !marker.Drain(&r.block_bytes)) {
      r.skipped = absl::StrCat("the scan stopped: ", marker.stop());
      return r;
    }
  }
  if (r.root_bytes == 0) {
    r.skipped = "none of its memory could be read";
    return r;
  }
  if (!marker.SplitLost(&r.block_bytes)) {
    r.skipped = absl::StrCat("the scan stopped: ", marker.stop());
    return r;
  }
  r.done = true;
  r.reachable = marker.TakeMarks();
  r.indirect = marker.TakeIndirect();
  return r;
}

}  // namespace cgoheap::client
