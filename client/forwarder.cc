#include "client/forwarder.h"

#include <dirent.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <algorithm>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <deque>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/address_index.h"
#include "client/fault_guard.h"
#include "common/clock.h"
#include "common/escape.h"
#include "common/sha256.h"
#include "proto/stack_id.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace cgoheap::client {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t RandomId() {
  uint64_t v = 0;
  while (v == 0) {
    if (getrandom(&v, sizeof v, 0) != sizeof v) v = static_cast<uint64_t>(UnixNanos()) * 2654435761u;
  }
  return v;
}

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

bool PidfdExited(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

// An exited process whose parent is this process: waitpid will report it.
bool IsOurZombie(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return false;
  // after "pid (comm) ": state, then ppid
  int ppid = 0;
  return sscanf(stat.c_str() + close_paren + 1, " %*c %d", &ppid) == 1 && ppid == getpid();
}

// Why a ring may not speak for the process it names, or "". A ring is
// written by whoever created the file: it may claim any pid. While that
// process lives, the ring must belong to its user (one of the uids in
// /proc/PID/status, which are there for processes of every user, dumpable
// or not), or a ring planted in a shared directory could end, or pose as,
// another user's process.
std::string ClaimRefused(const RingIdentity& who) {
  if (who.pid <= 0) return absl::StrCat("it names no process (pid ", who.pid, ")");
  std::string status = ReadFile(absl::StrCat("/proc/", who.pid, "/status"));
  size_t at = status.find("\nUid:");
  if (at == std::string::npos) return "";  // gone: there is no one to pose as
  unsigned long long uids[4] = {};
  int n = sscanf(status.c_str() + at + 5, "%llu %llu %llu %llu", &uids[0], &uids[1], &uids[2],
                 &uids[3]);
  for (int i = 0; i < n; ++i) {
    if (uids[i] == who.owner_uid) return "";
  }
  return absl::StrCat("it claims process ", who.pid, ", which runs as uid ", uids[1],
                      ", but the ring file belongs to uid ", who.owner_uid);
}

}  // namespace

void CapStack(v1::Stack* stack) {
  const int n = stack->frames_size();
  if (n <= kMaxFramesPerStack) return;
  const int outer = kMaxFramesPerStack / 4;            // kept at the outer end
  const int inner = kMaxFramesPerStack - outer - 1;    // kept at the inner end
  auto* frames = stack->mutable_frames();
  v1::Frame marker;
  marker.set_function(absl::StrCat("[", n - inner - outer, " frames left out: cgoheap keeps ",
                                   kMaxFramesPerStack, " per stack]"));
  // frames: [0, inner) kept, [inner, n - outer) dropped, [n - outer, n) kept.
  frames->DeleteSubrange(inner, n - outer - inner);
  *frames->Add() = std::move(marker);
  // The marker was appended: move it between the two kept ends.
  for (int i = frames->size() - 1; i > inner; --i) frames->SwapElements(i, i - 1);
}

// The exit scan keeps a process's live blocks (about 50 bytes each) up to
// this many.
constexpr size_t kMaxScanBlocks = 20'000'000;

struct Forwarder::Tracked {
  explicit Tracked(ObjectCache* objects) : sym(objects) {}

  std::string path;
  pid_t pid = 0;
  uint64_t process_id = 0;
  RingReader ring;
  ProcessSymbolizer sym;
  std::unique_ptr<IngestStream> stream;
  int pidfd = -1;
  bool ended = false;      // the process is gone: drain, then End
  bool end_sent = false;
  bool told_damage = false;
  // Started by a forwarder before this one: nothing is read until the server
  // says where that one stopped (IngestStream::ResumePositions).
  bool resuming = false;
  // Batches sent and not yet acknowledged: their seq, and where the reader
  // stood when each was cut (lane positions, rolled-back pairs counted).
  // The ring space goes back to the agent only when the server has made
  // them durable.
  struct InFlight {
    uint64_t seq;
    std::vector<uint64_t> positions, rolled_back;
  };
  std::deque<InFlight> in_flight;
  bool told_refused = false;
  v1::ProcessEnd end;
  std::string own_basis;  // how its executable's own code is told apart (Stack.own_basis)

  // Raw stacks (api + return addresses) already interned, by their hash;
  // each keeps its frames, so that two stacks whose hashes collide are never
  // taken for one another.
  struct RawStack {
    uint64_t stack_id;
    ring::Api api;
    bool frames_cut;
    std::vector<uint64_t> frames;
    bool Is(const RingRecord& rec) const {
      return api == rec.api && frames_cut == rec.frames_cut &&
             frames.size() == static_cast<size_t>(rec.nframes) &&
             std::equal(rec.frames, rec.frames + rec.nframes, frames.begin());
    }
  };
  absl::flat_hash_map<uint64_t, std::unique_ptr<RawStack>> raw_to_stack;
  // The raw stacks seen last, by their first two frames: most events come
  // from a few call sites, and a hit here skips hashing the whole stack.
  std::array<const RawStack*, 256> recent{};
  absl::flat_hash_set<uint64_t> stacks_sent;
  // The batch being built.
  v1::EventBatch batch;
  AddressIndex batch_allocs;  // address -> index in batch
  size_t batch_stack_bytes = 0;  // of the new stacks in the batch
  int live_events = 0;
  uint64_t cancelled = 0;  // pairs cancelled since the last batch
  uint64_t ring_cancelled_counted = 0;  // of ring.cancelled(), those counted in `cancelled`
  absl::Time first_event;
  absl::Time last_sent = absl::Now();  // the hello, then each batch
  // Watched for its exit scan (Forwarder::WatchExit, exact mode): its live
  // blocks as sent, address -> size, stack and allocation order.
  bool keep_live = false;
  uint64_t allocs_kept = 0;  // the allocation order's counter
  // Not watched, and why (ForwarderOptions::watch_exit_of's answer): its end
  // says so, unless it was replaced by exec (which has no exit to scan).
  std::string unscanned_why;
  struct LiveEntry {
    uint64_t size, stack, seq;
  };
  absl::flat_hash_map<uint64_t, LiveEntry> live;
};

Forwarder::Forwarder(ForwarderOptions options) : options_(std::move(options)) {
  // Before any file a target names is mapped (client/fault_guard.h).
  InstallFaultHandler();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  host_ = host;
}

Forwarder::~Forwarder() {
  for (auto& [path, t] : tracked_) {
    if (t->pidfd >= 0) close(t->pidfd);
  }
}

std::vector<std::string> Forwarder::process_ids() const { return ids_; }

uint64_t Forwarder::dropped_events() const {
  uint64_t n = retired_dropped_;
  for (const auto& [path, t] : tracked_) n += t->ring.dropped_events();
  return n;
}

void Forwarder::ReleaseAcked(Tracked& t) {
  // Not resumable, or refused (what was read is discarded): all of it goes.
  if (!options_.resumable || !t.stream->error().ok()) {
    t.in_flight.clear();
    t.ring.Release();
    return;
  }
  const uint64_t acked = t.stream->acked();
  std::optional<Tracked::InFlight> durable;
  while (!t.in_flight.empty() && t.in_flight.front().seq <= acked) {
    durable = std::move(t.in_flight.front());
    t.in_flight.pop_front();
  }
  if (durable) t.ring.ReleaseTo(durable->positions, durable->rolled_back);
}

bool Forwarder::Ready(Tracked& t) {
  if (!t.resuming) return true;
  if (!t.stream->error().ok()) {
    t.resuming = false;  // refused: read and discard (Refused says why)
    return true;
  }
  if (!t.stream->Greeted()) return false;  // the server has not answered yet
  t.ring.ResumeAt(t.stream->ResumePositions());
  t.resuming = false;
  return true;
}

void Forwarder::Retire() {
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    Tracked& t = *it->second;
    bool done = t.end_sent && (t.stream->acked() == t.stream->sent() || !t.stream->error().ok());
    if (!done) {
      ++it;
      continue;
    }
    retired_dropped_ += t.ring.dropped_events();
    // Only now, all of it durable, is the ring removed: a forwarder that
    // dies before this point leaves it to the next one. Never read again:
    // gone, or (a directory we may not write) known as done.
    if (unlink(t.path.c_str()) != 0 && errno != ENOENT) rejected_.insert(t.path);
    it = tracked_.erase(it);  // unmaps the ring, ends the stream and its threads
  }
}

void Forwarder::Discover() {
  if (!ring_dir_changes_.Changed()) return;  // no ring came or went
  DIR* dir = opendir(options_.ring_dir.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> fresh;
  absl::flat_hash_set<std::string> still_rejected;  // files that went away are forgotten
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (!absl::EndsWith(name, ".ring")) continue;
    std::string path = options_.ring_dir + "/" + name;
    if (rejected_.contains(path)) {
      still_rejected.insert(path);
    } else if (!tracked_.contains(path)) {
      fresh.push_back(path);
    }
  }
  closedir(dir);
  rejected_ = std::move(still_rejected);
  std::sort(fresh.begin(), fresh.end(), [](const std::string& a, const std::string& b) {
    auto nanos = [](const std::string& p) {
      std::string_view base = std::string_view(p).substr(p.rfind('/') + 1);
      unsigned long long pid = 0, v = 0;
      return sscanf(std::string(base).c_str(), "%llu-%llu", &pid, &v) == 2 ? v : 0ull;
    };
    return nanos(a) < nanos(b);
  });
  for (const std::string& path : fresh) {
    auto t = std::make_unique<Tracked>(&objects_);
    t->path = path;
    if (!t->ring.Open(path)) {  // not a ring this version reads: say so once
      rejected_.insert(path);
      ++rings_ignored_;
      std::cerr << "cgoheap: ignoring " << path << ": " << t->ring.open_error() << "\n";
      continue;
    }
    const RingIdentity& who = t->ring.identity();
    t->pid = who.pid;
    if (std::string why = ClaimRefused(who); !why.empty()) {
      rejected_.insert(path);
      ++rings_ignored_;
      std::cerr << "cgoheap: ignoring " << path << ": " << why << "\n";
      continue;
    }
    // An exec replaces the image but keeps the pid: the older ring is done.
    // (A ring of another user, or older than the one it would end, is no
    // exec of that process.)
    for (auto& [p, other] : tracked_) {
      const RingIdentity& was = other->ring.identity();
      if (other->pid == t->pid && !other->ended && was.owner_uid == who.owner_uid &&
          was.start_unix_nanos <= who.start_unix_nanos) {
        other->ended = true;
        other->end.set_exec(true);
        other->end.set_unix_nanos(UnixNanos());
      }
    }
    t->pidfd = PidfdOpen(t->pid);
    if (t->pidfd < 0 && !IsOurZombie(t->pid)) {
      // Gone before we looked (or before this forwarder started): its events
      // are all in the ring; drain them and end it.
      t->ended = true;
      t->end.set_status_unknown(true);
      t->end.set_unix_nanos(UnixNanos());
    }
    // The id a forwarder before this one gave the process, if one did (it
    // crashed, or was restarted): then this is the same process, resumed
    // where the server says that forwarder stopped.
    uint64_t fresh = RandomId();
    t->process_id = t->ring.ClaimProcessId(fresh);
    if (t->process_id == 0) t->process_id = fresh;
    t->resuming = t->process_id != fresh;
    if (t->resuming) {
      std::cerr << "cgoheap: resuming process " << t->pid << " ("
                << absl::StrFormat("%016x", t->process_id)
                << ") where the forwarder before this one left it\n";
    }
    // A forwarder with other rights than the target's (a sidecar as root)
    // opens only what the target itself could read.
    if (geteuid() != who.owner_uid) t->sym.ReadAs(who.owner_uid, who.owner_gid);
    std::string pid_dir = "/proc/" + std::to_string(t->pid);
    // The agent's snapshot, completed by /proc (mappings made after it),
    // which is partial or empty for a process that is exiting.
    t->sym.SetMappings(t->ring.Maps());
    t->sym.AddMappings(ReadFile(pid_dir + "/maps"));
    t->sym.OpenAll();  // now, while the files certainly exist

    v1::ProcessHello hello;
    hello.set_process_id(t->process_id);
    hello.set_host(WireString(host_));
    hello.set_pid(t->pid);
    hello.set_start_unix_nanos(who.start_unix_nanos);
    hello.set_sample_bytes(who.sample_bytes);
    // Who it is, as the agent wrote it at start-up: short-lived processes
    // are often gone, /proc entries with them, before this first look.
    std::string_view exe = who.exe;
    if (exe.ends_with(" (deleted)")) exe.remove_suffix(10);
    hello.set_executable(WireString(exe));
    if (!exe.empty() && t->sym.MayOpen(std::string(exe))) {
      if (ObjectFile* obj = objects_.Get(std::string(exe))) {
        hello.set_build_id(WireString(obj->build_id()));
        hello.set_go_version(WireString(obj->go_version()));
        hello.set_go_main_module(WireString(obj->go_main_module()));
        t->own_basis = WireString(obj->own_basis());
      }
    }
    // A C program with a Go library linked at start-up: the library's Go
    // release (`cgoheap ps`, GO). Which code is the program's stays the
    // generic rule (own_basis unset): the C program's code is as much its
    // own as the library's Go. A library dlopened after this hello is not
    // seen here.
    if (hello.go_version().empty()) {
      if (ObjectFile* lib = t->sym.GoObject()) hello.set_go_version(WireString(lib->go_version()));
    }
    // Before its first event is read: a scan needs every block.
    if (who.sample_bytes == 0 && !watch_exit_.contains(t->pid) && options_.watch_exit_of) {
      t->unscanned_why = options_.watch_exit_of(t->pid, hello);
      if (t->unscanned_why.empty()) watch_exit_.insert(t->pid);
    }
    t->keep_live = who.sample_bytes == 0 && watch_exit_.contains(t->pid);
    t->ring.TellLookedAt();  // a child that waits for this goes on (traced or not)
    hello.set_go_crossing_unknown((who.flags & ring::kFlagGoCrossingUnknown) != 0);
    for (size_t i = 0; i < std::size(ring::kAllocatorFunctions); ++i) {
      if (who.foreign_allocator >> i & 1) hello.add_foreign_allocator(ring::kAllocatorFunctions[i]);
    }
    hello.set_clock(who.clock == ring::Clock::kTsc       ? "tsc"
                    : who.clock == ring::Clock::kStripes ? "stripes"
                                                         : "counter");
    // The key of this process's stream: ours, or the one a forwarder before
    // us put in the ring (the server lets only its holder continue).
    uint64_t key = t->ring.ClaimStreamKey(RandomId());
    hello.set_stream_key(std::string(reinterpret_cast<const char*>(&key), sizeof key));
    for (absl::string_view a : absl::StrSplit(who.cmdline, '\0', absl::SkipEmpty())) {
      hello.add_args(WireString(std::string_view(a.data(), a.size())));
    }
    std::string service = options_.service;
    if (service.empty()) service = who.service;
    if (service.empty()) {
      service = std::string(exe.substr(exe.rfind('/') + 1));
    }
    if (service.empty()) service = "unknown";
    hello.set_service(WireString(service));
    t->stream = std::make_unique<IngestStream>(options_.channel, hello, options_.authorization);
    if (options_.remember_processes) ids_.push_back(absl::StrFormat("%016x", t->process_id));
    tracked_[path] = std::move(t);
  }
}

// Hash of a raw stack. The products are independent of each other (the
// frames' position is mixed in), so the loop is not one long chain of
// multiplications; a final avalanche spreads every bit.
uint64_t RawStackHash(const RingRecord& rec) {
  uint64_t h = 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(rec.api) + 1 + 256 * rec.frames_cut);
  for (int i = 0; i < rec.nframes; ++i) {
    h += (rec.frames[i] ^ (0xc2b2ae3d27d4eb4fULL * static_cast<uint64_t>(i + 1))) *
         0x9fb21c651e98df25ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t Forwarder::Intern(Tracked& t, const RingRecord& rec) {
  uint64_t quick = (rec.nframes > 0 ? rec.frames[0] : 0) ^
                   (rec.nframes > 1 ? rec.frames[1] * 0x9e3779b97f4a7c15ULL : 0) ^
                   static_cast<uint64_t>(rec.api) ^ (uint64_t{rec.frames_cut} << 8);
  const Tracked::RawStack*& recent = t.recent[(quick ^ (quick >> 17) ^ (quick >> 31)) & 255];
  if (recent != nullptr && recent->Is(rec)) return recent->stack_id;
  uint64_t raw = RawStackHash(rec);
  auto cached = t.raw_to_stack.find(raw);
  if (cached != t.raw_to_stack.end() && cached->second->Is(rec)) {
    recent = cached->second.get();
    return recent->stack_id;
  }

  v1::Stack stack;
  stack.add_frames()->set_function(ring::ApiName(rec.api));
  std::vector<SymbolizedFrame> frames;
  for (int i = 0; i < rec.nframes; ++i) {
    uint64_t pc = rec.frames[i];
    frames.clear();
    if (!t.sym.Symbolize(pc, true, &frames)) {
      // Mapped after we looked (dlopen): the agent's snapshot (it takes a
      // new one after each dlopen) and /proc, while the process lives.
      t.sym.AddMappings(t.ring.Maps());
      if (!t.ended) t.sym.AddMappings(ReadFile("/proc/" + std::to_string(t.pid) + "/maps"));
      t.sym.Symbolize(pc, true, &frames);
    }
    if (frames.empty()) {
      frames.emplace_back();
      frames.back().function = "??";
    }
    for (size_t j = 0; j < frames.size(); ++j) {
      const SymbolizedFrame& f = frames[j];
      v1::Frame* out = stack.add_frames();
      out->set_inlined(j + 1 < frames.size());  // into the next: one pc, one machine frame
      out->set_build_id(WireString(f.build_id));
      out->set_function(WireString(f.function));
      out->set_file(WireString(f.file));
      out->set_line(f.line);
      out->set_object(WireString(f.object));
      out->set_pc(pc);
      out->set_go(f.go);
      out->set_own(f.own);
    }
  }
  if (rec.frames_cut) {
    // The agent records a stack's innermost kMaxFrames frames: said where
    // the outer ones would be.
    stack.add_frames()->set_function(absl::StrCat(
        "[the stack goes on: cgoheap records its innermost ", ring::kMaxFrames, " frames]"));
  }
  stack.set_own_basis(t.own_basis);
  CapStack(&stack);
  uint64_t id = StackIdOf(stack);
  stack.set_id(id);
  // A hash another raw stack already holds (a collision) stays with that
  // one; this stack is then symbolized each time it comes.
  if (cached == t.raw_to_stack.end()) {
    auto entry = std::make_unique<Tracked::RawStack>(
        Tracked::RawStack{id, rec.api, rec.frames_cut, {rec.frames, rec.frames + rec.nframes}});
    recent = entry.get();
    t.raw_to_stack.emplace(raw, std::move(entry));
  }
  if (t.stacks_sent.insert(id).second) {
    t.batch_stack_bytes += stack.ByteSizeLong();
    *t.batch.add_new_stacks() = std::move(stack);
  }
  return id;
}

double Forwarder::Drain(Tracked& t) {
  if (records_.empty()) records_.resize(kRecordsPerRead);
  size_t n = 0;
  const uint64_t words_before = t.ring.words_read();
  // Read in runs (one guarded pass over the ring each), taken one by one,
  // until a run comes back short: all that was there when the reader last
  // looked at the lanes is read (PollPacer says when to look again).
  for (size_t got = records_.size(); got == records_.size();) {
    got = t.ring.NextMany(records_.data(), records_.size());
    for (size_t i = 0; i < got; ++i) {
      const RingRecord& rec = records_[i];
      if (t.live_events == 0 && t.batch.kinds_size() == 0) t.first_event = absl::Now();
      if (rec.kind == ring::Kind::kAlloc) {
        uint64_t stack = Intern(t, rec);
        t.batch_allocs.Set(rec.address, t.batch.kinds_size());
        t.batch.add_kinds(v1::EVENT_KIND_ALLOC);
        t.batch.add_addresses(rec.address);
        t.batch.add_sizes(rec.size);
        t.batch.add_stack_ids(stack);
        ++t.live_events;
      } else {
        // Freed in the same batch it was allocated in: neither event is sent.
        if (int at_alloc; t.batch_allocs.Take(rec.address, &at_alloc)) {
          t.batch.set_kinds(at_alloc, v1::EVENT_KIND_UNSPECIFIED);
          --t.live_events;
          ++t.cancelled;
        } else {
          t.batch.add_kinds(v1::EVENT_KIND_FREE);
          t.batch.add_addresses(rec.address);
          t.batch.add_sizes(0);
          t.batch.add_stack_ids(0);
          ++t.live_events;
        }
      }
      if (++n % 1024 == 0) {
        ReleaseAcked(t);
        // Space goes back only when acknowledged: send early enough that no
        // lane fills while a batch waits.
        if (options_.resumable && t.ring.MaxUnreleased() > t.ring.lane_words() / 8) {
          Flush(t, true, std::span(records_).subspan(i + 1, got - i - 1));
        }
      }
      // Cancelled pairs keep their slots until the flush compacts them: bound
      // those too, or a churning process fills the forwarder's memory.
      // Bytes: an event is at most 1 + 10 + 10 + 9 bytes in the packed arrays.
      if (t.live_events >= static_cast<int>(options_.max_batch_events) ||
          t.batch.kinds_size() >= 4 * static_cast<int>(options_.max_batch_events) ||
          t.batch_stack_bytes + 30 * static_cast<size_t>(t.batch.kinds_size()) >=
              options_.max_batch_bytes) {
        Flush(t, true, std::span(records_).subspan(i + 1, got - i - 1));
      }
    }
  }
  ReleaseAcked(t);
  if (const char* damage = t.ring.damage(); damage != nullptr && !t.told_damage) {
    t.told_damage = true;
    std::cerr << "cgoheap: process " << t.pid << " (" << t.path << "): " << damage
              << ": its later events are not read, and its report says so\n";
  }
  // The lane space read, records taken and skipped alike (pairs rolled
  // back took none): the pace of the lanes filling (PollPacer).
  const uint64_t quarter = std::max<uint64_t>(t.ring.lane_words() / 4, 1);
  return static_cast<double>(t.ring.words_read() - words_before) / static_cast<double>(quarter);
}

bool Forwarder::Refused(Tracked& t) {
  absl::Status st = t.stream->error();
  if (st.ok()) return false;
  if (!t.told_refused) {
    t.told_refused = true;
    std::cerr << "cgoheap: the server refused the stream of process " << t.pid << " ("
              << absl::StrFormat("%016x", t.process_id) << "): " << st.message()
              << "\ncgoheap: its later events are read and discarded, so that it runs on\n";
  }
  return true;
}

void Forwarder::Flush(Tracked& t, bool force, std::span<const RingRecord> unread) {
  const bool heartbeat = absl::Now() - t.last_sent >= options_.heartbeat;
  // Pairs the agent cancelled in the ring (the reader skipped them) go with
  // this batch's own.
  t.cancelled += t.ring.cancelled() - t.ring_cancelled_counted;
  t.ring_cancelled_counted = t.ring.cancelled();
  if (t.batch.kinds_size() == 0 && t.batch.new_stacks_size() == 0 && t.cancelled == 0 &&
      !heartbeat) {
    return;
  }
  if (Refused(t)) {
    t.batch.Clear();
    t.batch_allocs.Clear();
    t.batch_stack_bytes = 0;
    t.live_events = 0;
    return;
  }
  if (!force && !heartbeat && absl::Now() - t.first_event < options_.max_batch_delay) return;
  t.last_sent = absl::Now();
  // Compact the builder in place (cancelled pairs out) and send it as is.
  v1::EventBatch& b = t.batch;
  const int built = b.kinds_size();  // before compaction: what the next one will need
  int kept = 0;
  for (int i = 0; i < b.kinds_size(); ++i) {
    if (b.kinds(i) == v1::EVENT_KIND_UNSPECIFIED) continue;  // a cancelled pair
    b.set_kinds(kept, b.kinds(i));
    b.set_addresses(kept, b.addresses(i));
    b.set_sizes(kept, b.sizes(i));
    b.set_stack_ids(kept, b.stack_ids(i));
    ++kept;
  }
  if (t.keep_live && t.live.size() + kept > kMaxScanBlocks) {
    // Its live set would take gigabytes here, beside the server's.
    t.keep_live = false;
    t.live = {};
    t.end.mutable_exit_scan()->set_skipped(absl::StrCat(
        "it had more than ", kMaxScanBlocks, " blocks live, more than the scan keeps track of"));
  }
  if (t.keep_live) {
    for (int i = 0; i < kept; ++i) {
      if (b.kinds(i) == v1::EVENT_KIND_ALLOC) {
        t.live[b.addresses(i)] = {b.sizes(i), b.stack_ids(i), ++t.allocs_kept};
      } else {
        t.live.erase(b.addresses(i));
      }
    }
  }
  b.mutable_kinds()->Truncate(kept);
  b.mutable_addresses()->Truncate(kept);
  b.mutable_sizes()->Truncate(kept);
  b.mutable_stack_ids()->Truncate(kept);
  b.set_unix_nanos(UnixNanos());
  b.set_dropped_events(t.ring.dropped_events());
  b.set_unwind_failures(t.ring.unwind_failures());
  if (const char* damage = t.ring.damage()) b.set_ring_damage(damage);
  b.set_cancelled_pairs(t.cancelled);  // this batch's: the server adds them up
  t.cancelled = 0;
  std::vector<uint64_t> positions = t.ring.Positions();
  for (const RingRecord& r : unread) {  // each lane's first unread record
    if (r.lane < positions.size()) positions[r.lane] = std::min(positions[r.lane], r.pos);
  }
  for (uint64_t pos : positions) b.add_lane_positions(pos);
  v1::AgentMessage msg;
  msg.mutable_batch()->Swap(&b);
  // The next batch of a busy process is as big: room for it now, not by
  // doubling (and copying) each array as it grows.
  b.mutable_kinds()->Reserve(built);
  b.mutable_addresses()->Reserve(built);
  b.mutable_sizes()->Reserve(built);
  b.mutable_stack_ids()->Reserve(built);
  t.batch_allocs.Clear();
  t.batch_stack_bytes = 0;
  t.live_events = 0;
  if (uint64_t seq = t.stream->Send(std::move(msg)); seq != 0) {
    t.in_flight.push_back({seq, std::move(positions), t.ring.RolledBackCounted()});
  }
}

void Forwarder::End(Tracked& t) {
  t.ring.WritersGone();
  Drain(t);
  Flush(t, true);
  if (!t.unscanned_why.empty() && !t.end.exec() && !t.end.has_exit_scan()) {
    t.end.mutable_exit_scan()->set_skipped(WireString(t.unscanned_why));
  }
  v1::AgentMessage msg;
  *msg.mutable_end() = t.end;
  if (msg.end().unix_nanos() == 0) msg.mutable_end()->set_unix_nanos(UnixNanos());
  msg.mutable_end()->set_dropped_events(t.ring.dropped_events());
  msg.mutable_end()->set_unwind_failures(t.ring.unwind_failures());
  if (const char* damage = t.ring.damage()) msg.mutable_end()->set_ring_damage(damage);
  msg.mutable_end()->set_torn_records(t.ring.Uncommitted() > 0 ? 1 : 0);
  if (!Refused(t)) t.stream->Send(std::move(msg));
  t.end_sent = true;
  if (t.pidfd >= 0) {
    close(t.pidfd);
    t.pidfd = -1;
  }
}

void Forwarder::Prepare(const std::string& executable) {
  Sha256::Prepare();  // every stack id is one
  char real[PATH_MAX];
  if (realpath(executable.c_str(), real) == nullptr) return;
  if (ObjectFile* obj = objects_.Get(real)) obj->LoadDebugInfo();
}

void Forwarder::ScanAtExit(pid_t pid, ExitScanOptions opts) {
  Discover();
  Tracked* t = nullptr;
  for (auto& [path, tr] : tracked_) {
    if (tr->pid == pid && !tr->ended) t = tr.get();
  }
  if (t == nullptr || !t->keep_live || !Ready(*t)) return;
  // Every event before the exit, sent: the live set is complete.
  Drain(*t);
  Flush(*t, true);
  const absl::Time start = absl::Now();
  std::vector<LiveBlock> blocks;
  std::vector<uint64_t> stacks;
  blocks.reserve(t->live.size());
  stacks.reserve(t->live.size());
  for (const auto& [address, e] : t->live) {
    blocks.push_back({address, e.size, e.seq});
    stacks.push_back(e.stack);
  }
  opts.skip_files.push_back(options_.ring_dir);
  ExitScanResult r = ScanReachable(pid, blocks, opts);
  v1::ExitScan* scan = t->end.mutable_exit_scan();
  scan->set_done(r.done);
  scan->set_skipped(WireString(r.skipped));
  scan->set_root_bytes(r.root_bytes);
  scan->set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  if (!r.done) return;
  absl::flat_hash_map<uint64_t, v1::StackTotal> reachable, indirect;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!r.reachable[i] && !r.indirect[i]) continue;
    v1::StackTotal& s = (r.reachable[i] ? reachable : indirect)[stacks[i]];
    s.set_stack_id(stacks[i]);
    s.set_bytes(s.bytes() + blocks[i].size);
    s.set_blocks(s.blocks() + 1);
  }
  for (auto& [id, s] : reachable) *scan->add_reachable() = std::move(s);
  for (auto& [id, s] : indirect) *scan->add_indirect() = std::move(s);
  t->live.clear();
}

void Forwarder::ExitNotScanned(pid_t pid, const std::string& why) {
  for (auto& [path, t] : tracked_) {
    // Exact mode only (a sampled process is never scanned); an image
    // replaced by exec had no exit to scan.
    if (t->pid != pid || t->end_sent || t->end.has_exit_scan() || t->end.exec() ||
        t->ring.identity().sample_bytes != 0) {
      continue;
    }
    t->end.mutable_exit_scan()->set_skipped(WireString(why));
    t->keep_live = false;
    t->live.clear();
  }
}

void Forwarder::OnExit(pid_t pid, int status) {
  // Every ring of pid has ended; the newest one carries the exit status
  // (older ones were replaced by exec and were marked when it appeared).
  Discover();
  Tracked* newest = nullptr;
  for (auto& [path, t] : tracked_) {
    if (t->pid == pid && !t->ended) newest = t.get();
  }
  if (newest == nullptr) return;
  newest->ended = true;
  if (WIFEXITED(status)) {
    newest->end.set_exited(true);
    newest->end.set_exit_code(WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    newest->end.set_signal(WTERMSIG(status));
  }
  newest->end.set_unix_nanos(UnixNanos());
}

int PollPacer::Next(double quarters, absl::Time now) {
  double elapsed_ms = std::max(absl::ToDoubleMilliseconds(now - last_), 0.1);
  last_ = now;
  if (quarters <= 0) {
    sleep_ms_ = std::min(sleep_ms_ * 2, kMaxSleepMs);
  } else {
    double per_ms = quarters / elapsed_ms;
    sleep_ms_ = static_cast<int>(std::clamp(1.0 / per_ms, 1.0, double{kMaxSleepMs}));
  }
  return sleep_ms_;
}

double Forwarder::Poll() {
  Retire();
  Discover();
  double drained = 0;
  for (auto& [path, t] : tracked_) {
    if (t->end_sent || !Ready(*t)) continue;
    // A process that is not our child (nor reparented to us) ends without a
    // status we can read. Our children's status comes through OnExit.
    if (!t->ended && PidfdExited(t->pidfd) && !IsOurZombie(t->pid)) {
      t->ended = true;
      t->end.set_status_unknown(true);
      t->end.set_unix_nanos(UnixNanos());
    }
    if (t->ended) {
      End(*t);
    } else {
      drained += Drain(*t);
      Flush(*t, false);
    }
  }
  return drained;
}

absl::Status Forwarder::Finish(absl::Duration timeout) {
  Poll();
  for (auto& [path, t] : tracked_) {
    // A resumed process the server never answered for stays in its ring,
    // for the next forwarder.
    if (!t->end_sent && Ready(*t)) {
      Drain(*t);
      Flush(*t, true);
    }
  }
  absl::Time deadline = absl::Now() + timeout;
  absl::Status result;
  for (auto& [path, t] : tracked_) {
    absl::Status st = t->stream->WaitAcked(std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (!st.ok() && result.ok()) result = st;
  }
  for (auto& [path, t] : tracked_) ReleaseAcked(*t);
  Retire();  // ended and acknowledged: their rings go
  // Close the streams: everything is acknowledged (or given up on).
  for (auto& [path, t] : tracked_) t->stream.reset();
  return result;
}

}  // namespace cgoheap::client
