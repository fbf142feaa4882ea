#include "server/ingest/heap_state.h"

#include "common/sha256.h"
#include "proto/stack_id.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/sampling.h"
#include "server/leak/growth.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {
namespace {

std::string StateOf(const v1::StoredProcess& rec) {
  if (!rec.ended()) return "running";
  if (rec.end().exec()) return "exec";
  if (rec.end().status_unknown()) return "ended";
  if (rec.end().signal() != 0) return "killed";
  return "exited";
}

// Snapshot when the batch log since the last one exceeds this many times the
// live heap's snapshot size (and at least kMinLogBytes).
constexpr uint64_t kLogToLiveRatio = 4;
constexpr uint64_t kSnapshotBytesPerBlock = 24;

}  // namespace

std::string HeapState::FormatProcessId(uint64_t id) { return absl::StrFormat("%016x", id); }

bool HeapState::ParseProcessId(std::string_view text, uint64_t* id) {
  if (text.empty() || text.size() > 16) return false;
  uint64_t v = 0;
  for (char c : text) {
    int d = c >= '0' && c <= '9' ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return false;
    v = v * 16 + d;
  }
  *id = v;
  return true;
}

absl::Status HeapState::Load() {
  absl::Status st = store_->ForEachStack([this](v1::Stack&& s) { AddStack(std::move(s)); });
  if (!st.ok()) return st;
  std::vector<std::pair<uint64_t, v1::StoredProcess>> recs;
  st = store_->ForEachProcess(
      [&](uint64_t id, v1::StoredProcess&& p) { recs.emplace_back(id, std::move(p)); });
  if (!st.ok()) return st;
  for (auto& [id, rec] : recs) {
    auto p = std::make_shared<Process>();
    absl::MutexLock lock(&p->mu);
    p->rec = std::move(rec);
    p->last_seq = p->rec.last_seq();
    p->last_heard = Now();  // a restart counts as hearing from everyone
    if (!p->rec.ended()) {
      Process& proc = *p;
      proc.defined_unknown = true;
      absl::StatusOr<v1::LiveSnapshot> snap = store_->GetSnapshot(
          id, [&proc](const v1::LiveSnapshot& chunk) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            const int n = std::min({chunk.addresses_size(), chunk.sizes_size(),
                                    chunk.stack_ids_size()});
            for (int i = 0; i < n; ++i) {
              AddBlock(proc, chunk.addresses(i), chunk.sizes(i), chunk.stack_ids(i));
            }
          });
      if (snap.ok()) {
        proc.last_seq = snap->seq();
        proc.rec.set_events(snap->events());
        proc.rec.set_unknown_frees(snap->unknown_frees());
        proc.rec.set_dropped_events(snap->dropped_events());
        proc.rec.set_unwind_failures(snap->unwind_failures());
        proc.rec.set_ring_damage(snap->ring_damage());
        proc.lane_positions.assign(snap->lane_positions().begin(), snap->lane_positions().end());
        proc.rec.set_cancelled_pairs(snap->cancelled_pairs());
      } else if (!absl::IsNotFound(snap.status())) {
        return snap.status();
      }
      st = store_->ForEachBatch(id, [&proc](uint64_t seq, v1::EventBatch&& b)
                                        ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                          ApplyEvents(proc, b);
                                          proc.last_seq = seq;
                                        });
      if (!st.ok()) return st;
    }
    live_blocks_ += static_cast<int64_t>(p->live.size());
    absl::MutexLock map_lock(&mu_);
    procs_[id] = std::move(p);
  }
  return absl::OkStatus();
}

void HeapState::AddStack(v1::Stack&& st) {
  auto entry = std::make_shared<StackEntry>();
  entry->cls = ClassifyStack(st);
  entry->stack = std::move(st);
  absl::MutexLock lock(&stacks_mu_);
  stacks_.try_emplace(entry->stack.id(), std::move(entry));
}

bool HeapState::HaveStack(uint64_t id) const {
  absl::MutexLock lock(&stacks_mu_);
  return stacks_.contains(id);
}

std::shared_ptr<HeapState::Process> HeapState::Find(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = procs_.find(id);
  return it == procs_.end() ? nullptr : it->second;
}

int64_t HeapState::Now() const { return options_.clock ? options_.clock() : UnixNanos(); }

bool HeapState::Lost(const Process& p, int64_t now) const {
  return !p.rec.ended() && options_.lost_after_seconds > 0 &&
         now - p.last_heard > static_cast<int64_t>(options_.lost_after_seconds * 1e9);
}

absl::Status HeapState::Refuse(const char* limit, const std::string& what) const {
  if (metrics_ != nullptr) metrics_->OnLimitRefusal(limit);
  return absl::ResourceExhaustedError(what);
}

absl::StatusOr<uint64_t> HeapState::Hello(const v1::ProcessHello& hello) {
  if (hello.process_id() == 0) {
    return absl::InvalidArgumentError("hello: process_id must be non-zero");
  }
  if (hello.ByteSizeLong() > kMaxHelloBytes) {
    return Refuse("hello_bytes",
                  absl::StrFormat("hello of process %s is %d bytes, more than the %d a hello may "
                                  "have",
                                  FormatProcessId(hello.process_id()), hello.ByteSizeLong(),
                                  kMaxHelloBytes));
  }
  std::shared_ptr<Process> p;
  {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(hello.process_id());
    if (it == procs_.end()) {
      if (procs_.size() >= options_.max_processes) {
        return Refuse("processes",
                      absl::StrFormat("cgoheapd holds %d processes, its limit (--max-processes): "
                                      "raise it, or let --retention remove ended ones",
                                      procs_.size()));
      }
      it = procs_.emplace(hello.process_id(), std::make_shared<Process>()).first;
    }
    p = it->second;
  }
  std::string key_digest;
  if (!hello.stream_key().empty()) {
    Sha256 h;
    h.Update(hello.stream_key());
    std::array<uint8_t, 32> d = h.Final();
    key_digest.assign(d.begin(), d.end());
  }
  absl::MutexLock lock(&p->mu);
  p->last_heard = Now();
  if (p->rec.has_hello()) {
    // Reconnect: resume after last_seq, if it is the same forwarder's (or
    // its successor's: the key is in the process's ring). A process that
    // was started without a key (an older forwarder) cannot be told apart.
    if (!p->rec.stream_key_digest().empty() && p->rec.stream_key_digest() != key_digest) {
      return absl::PermissionDeniedError(absl::StrCat(
          "process ", FormatProcessId(hello.process_id()),
          " is streamed by another forwarder (its hello carries another stream key): only the "
          "forwarder that started a process, or one reading its ring after it, can continue it"));
    }
    return p->last_seq;
  }
  v1::StoredProcess rec;
  *rec.mutable_hello() = hello;
  rec.mutable_hello()->clear_stream_key();  // kept as a digest only, never shown
  rec.set_stream_key_digest(key_digest);
  rec.set_received_unix_nanos(UnixNanos());
  absl::Status st = store_->PutProcess(hello.process_id(), rec);
  if (!st.ok()) return st;
  p->rec = std::move(rec);
  return p->last_seq;
}

absl::Status HeapState::ValidateBatch(uint64_t seq, const v1::EventBatch& b) const {
  int n = b.kinds_size();
  if (b.addresses_size() != n || b.sizes_size() != n || b.stack_ids_size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch %d: kinds, addresses, sizes and stack_ids must have the same length (%d, %d, %d, "
        "%d)",
        seq, n, b.addresses_size(), b.sizes_size(), b.stack_ids_size()));
  }
  absl::flat_hash_map<uint64_t, bool> introduced;
  for (const v1::Stack& st : b.new_stacks()) {
    if (st.id() == 0 || st.frames_size() == 0 || st.frames_size() > kMaxFramesPerStack) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch %d: stack %016x must have a non-zero id and 1 to %d frames", seq, st.id(),
          kMaxFramesPerStack));
    }
    // The id is the digest of the frames: a client cannot define a stack
    // under another stack's id (and so change its frames, or hide a victim's
    // leak as internal by giving it C-library frames).
    if (uint64_t expected = StackIdOf(st); st.id() != expected) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch %d: stack %016x is not the id of its frames (%016x): a stack's id is the first "
          "8 bytes of SHA-256 over its frames (proto/stack_id.h)",
          seq, st.id(), expected));
    }
    introduced[st.id()] = true;
  }
  for (int i = 0; i < n; ++i) {
    if (b.kinds(i) == v1::EVENT_KIND_ALLOC) {
      uint64_t id = b.stack_ids(i);
      if (!introduced.contains(id) && !HaveStack(id)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "batch %d: event %d refers to stack %016x, which no batch defined", seq, i, id));
      }
    } else if (b.kinds(i) != v1::EVENT_KIND_FREE) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch %d: event %d has unknown kind %d", seq, i, b.kinds(i)));
    }
  }
  return absl::OkStatus();
}

// A live block leaves the process's totals; a stack left with no block
// leaves its by-stack map (as a reload, which rebuilds it from the blocks,
// would have it).
void HeapState::RemoveFromTotals(Process& p, const Block& blk) {
  double w = SampleWeight(blk.size, p.rec.hello().sample_bytes());
  auto t = p.by_stack.find(blk.stack_id);
  if (t != p.by_stack.end()) {
    t->second.Remove(blk.size, w);
    if (t->second.blocks == 0) p.by_stack.erase(t);
  }
  p.total.Remove(blk.size, w);
}

void HeapState::AddBlock(Process& p, uint64_t addr, uint64_t size, uint64_t stack) {
  const uint64_t rate = p.rec.hello().sample_bytes();
  Block blk{stack, size};
  auto [it, inserted] = p.live.try_emplace(addr, blk);
  if (!inserted) {  // its free was lost (dropped): the old block is gone
    RemoveFromTotals(p, it->second);
    it->second = blk;
  }
  double w = SampleWeight(size, rate);
  p.by_stack[stack].Add(size, w);
  p.total.Add(size, w);
}

uint64_t HeapState::SnapshotThreshold(const Process& p) const {
  return std::max(options_.min_log_bytes,
                  kLogToLiveRatio * kSnapshotBytesPerBlock * p.live.size());
}

bool HeapState::IsInternal(uint64_t stack_id) const {
  std::shared_ptr<const StackEntry> entry = FindStack(stack_id);
  return entry != nullptr && entry->cls.internal;
}

void HeapState::DetectGrowth(int64_t now) {
  std::vector<std::pair<uint64_t, std::shared_ptr<Process>>> running;
  {
    absl::MutexLock lock(&mu_);
    running.assign(procs_.begin(), procs_.end());
  }
  for (const auto& [id, p] : running) {
    absl::MutexLock lock(&p->mu);
    if (p->rec.has_hello() && !p->rec.ended()) DetectGrowth(id, *p, now);
  }
}

// The samples are kept here; whether they leak is server/leak/growth.h's.
void HeapState::DetectGrowth(uint64_t id, Process& p, int64_t now) {
  const int64_t window = static_cast<int64_t>(options_.leak_window_seconds * 1e9);
  if (now - p.last_sample >= GrowthResolution(window)) {
    p.last_sample = now;
    if (p.first_sample == 0) p.first_sample = now;
    for (const auto& [stack, t] : p.by_stack) {
      p.history[stack].push_back({now, t.est_bytes.ToDouble(), t.est_blocks.ToDouble()});
    }
    for (auto it = p.history.begin(); it != p.history.end();) {
      std::vector<GrowthSample>& pts = it->second;
      if (!p.by_stack.contains(it->first)) pts.push_back({now, 0});
      // Keep a window and a bit: the oldest point must precede the window.
      size_t drop = 0;
      while (drop + 1 < pts.size() && pts[drop + 1].t <= now - window) ++drop;
      pts.erase(pts.begin(), pts.begin() + drop);
      bool all_zero = std::all_of(pts.begin(), pts.end(), [](const auto& q) { return q.bytes <= 0; });
      if (all_zero) {
        p.growing.erase(it->first);
        p.history.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (const auto& [stack, pts] : p.history) {
    GrowthVerdict v;
    if (!IsInternal(stack)) v = JudgeGrowth(pts, now, window);
    if (v.grows) {
      auto [it, fresh] = p.growing.try_emplace(stack, Growth{v.rate_per_hour, v.since});
      it->second.rate_per_hour = v.rate_per_hour;
      if (fresh) {
        const Totals& t = p.by_stack.at(stack);
        Announce(id, p, "growth", stack, t.est_bytes.ToDouble(), t.est_blocks.ToDouble(),
                 v.rate_per_hour, v.since);
      }
    } else {
      p.growing.erase(stack);
    }
  }
}

void HeapState::Announce(uint64_t process_id, const Process& p, const char* kind,
                         uint64_t stack_id, double bytes, double blocks, double rate,
                         int64_t since) const {
  if (sink_ == nullptr) return;
  std::shared_ptr<const StackEntry> entry = FindStack(stack_id);
  if (entry == nullptr || entry->cls.internal) return;
  v1::Leak leak;
  leak.set_kind(kind);
  leak.set_bytes(static_cast<uint64_t>(std::llround(bytes)));
  leak.set_blocks(static_cast<uint64_t>(std::llround(blocks)));
  leak.set_processes(1);
  leak.add_process_ids(FormatProcessId(process_id));
  *leak.mutable_stack() = entry->stack;
  DescribeLeak(entry->cls, &leak);
  leak.set_estimated(p.rec.hello().sample_bytes() != 0);
  leak.set_sample_bytes(p.rec.hello().sample_bytes());
  leak.set_rate_bytes_per_hour(rate);
  leak.set_since_unix_nanos(since);
  sink_->Publish(p.rec.hello().service(), leak);
}

absl::Status HeapState::MaybeSnapshot(uint64_t id, Process& p) {
  if (p.log_bytes < SnapshotThreshold(p)) return absl::OkStatus();
  v1::LiveSnapshot header;
  header.set_seq(p.last_seq);
  header.set_events(p.rec.events());
  header.set_unknown_frees(p.rec.unknown_frees());
  header.set_dropped_events(p.rec.dropped_events());
  header.set_unwind_failures(p.rec.unwind_failures());
  header.set_ring_damage(p.rec.ring_damage());
  for (uint64_t pos : p.lane_positions) header.add_lane_positions(pos);
  header.set_cancelled_pairs(p.rec.cancelled_pairs());
  auto next = p.live.begin();
  const uint64_t per_chunk = std::max<uint64_t>(options_.snapshot_chunk_blocks, 1);
  absl::Status st = store_->PutSnapshot(
      id, std::move(header), [&](v1::LiveSnapshot* chunk) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        if (next == p.live.end()) return false;
        const int n = static_cast<int>(
            std::min<uint64_t>(per_chunk, static_cast<uint64_t>(p.live.size())));
        chunk->mutable_addresses()->Reserve(n);
        chunk->mutable_sizes()->Reserve(n);
        chunk->mutable_stack_ids()->Reserve(n);
        for (uint64_t i = 0; i < per_chunk && next != p.live.end(); ++i, ++next) {
          chunk->add_addresses(next->first);
          chunk->add_sizes(next->second.size);
          chunk->add_stack_ids(next->second.stack_id);
        }
        return true;
      });
  if (st.ok()) p.log_bytes = 0;
  return st;
}

void HeapState::ApplyEvents(Process& p, const v1::EventBatch& b) {
  for (int i = 0; i < b.kinds_size(); ++i) {
    uint64_t addr = b.addresses(i);
    if (b.kinds(i) == v1::EVENT_KIND_ALLOC) {
      AddBlock(p, addr, b.sizes(i), b.stack_ids(i));
    } else {
      auto it = p.live.find(addr);
      if (it == p.live.end()) {
        // Allocated before the agent started, or inside the agent itself.
        p.rec.set_unknown_frees(p.rec.unknown_frees() + 1);
        continue;
      }
      RemoveFromTotals(p, it->second);
      p.live.erase(it);
    }
  }
  p.rec.set_events(p.rec.events() + b.kinds_size());
  p.rec.set_dropped_events(std::max(p.rec.dropped_events(), b.dropped_events()));
  p.rec.set_unwind_failures(std::max(p.rec.unwind_failures(), b.unwind_failures()));
  if (p.rec.ring_damage().empty()) p.rec.set_ring_damage(b.ring_damage());
  if (b.lane_positions_size() > 0) {
    p.lane_positions.assign(b.lane_positions().begin(), b.lane_positions().end());
  }
  p.rec.set_cancelled_pairs(p.rec.cancelled_pairs() + b.cancelled_pairs());  // per batch
}

absl::StatusOr<uint64_t> HeapState::Apply(uint64_t stream_process_id, v1::AgentMessage& msg) {
  if (msg.has_hello()) {
    if (stream_process_id != 0 && stream_process_id != msg.hello().process_id()) {
      return absl::InvalidArgumentError("a stream carries one process: second hello differs");
    }
    return Hello(msg.hello());
  }
  if (!msg.has_batch() && !msg.has_end()) {
    return absl::InvalidArgumentError("message has no hello, batch or end");
  }
  std::shared_ptr<Process> p = stream_process_id ? Find(stream_process_id) : nullptr;
  if (p == nullptr) {
    return absl::FailedPreconditionError("the first message of a stream must be a hello");
  }
  // Before the process's lock, as Expire takes them.
  absl::ReaderMutexLock stack_use(&stack_use_mu_);
  absl::MutexLock lock(&p->mu);
  p->last_heard = Now();
  const uint64_t seq = msg.seq();
  if (seq <= p->last_seq) return p->last_seq;  // a resend of something durable
  if (p->rec.ended()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "process %s already ended at seq %d", FormatProcessId(stream_process_id), p->last_seq));
  }
  if (seq != p->last_seq + 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "seq %d arrived after %d: messages must be numbered 1, 2, 3, ... without gaps", seq,
        p->last_seq));
  }
  if (msg.has_batch()) {
    v1::EventBatch& events = *msg.mutable_batch();
    absl::Status st = ValidateBatch(seq, events);
    if (!st.ok()) return st;
    // Stacks are stored once, in their own column family, not in the batch.
    google::protobuf::RepeatedPtrField<v1::Stack> stacks;
    stacks.Swap(events.mutable_new_stacks());
    std::vector<const v1::Stack*> fresh;
    for (const v1::Stack& s : stacks) {
      if (!HaveStack(s.id())) fresh.push_back(&s);
    }
    // Limits, checked before anything is written: a refused batch leaves
    // everything acknowledged before it as it was.
    uint64_t allocs = 0;
    for (int i = 0; i < events.kinds_size(); ++i) allocs += events.kinds(i) == v1::EVENT_KIND_ALLOC;
    const std::string who = FormatProcessId(stream_process_id);
    if (p->stacks_defined + fresh.size() > options_.max_process_stacks) {
      return Refuse("process_stacks",
                    absl::StrFormat("process %s defined %d stacks, its limit "
                                    "(--max-process-stacks)", who, p->stacks_defined));
    }
    if (!fresh.empty()) {
      absl::MutexLock slock(&stacks_mu_);
      if (stacks_.size() + fresh.size() > options_.max_stacks) {
        return Refuse("stacks", absl::StrFormat("cgoheapd holds %d stacks, its limit "
                                                "(--max-stacks)", stacks_.size()));
      }
    }
    if (p->live.size() + allocs > options_.max_process_live_blocks) {
      return Refuse("process_live_blocks",
                    absl::StrFormat("process %s would have more than %d live blocks, its limit "
                                    "(--max-process-live-blocks); sample it "
                                    "(CGOHEAP_SAMPLE_BYTES) to record fewer",
                                    who, options_.max_process_live_blocks));
    }
    if (static_cast<uint64_t>(std::max<int64_t>(live_blocks_.load(), 0)) + allocs >
        options_.max_live_blocks) {
      return Refuse("live_blocks",
                    absl::StrFormat("cgoheapd holds %d live blocks, near its limit "
                                    "(--max-live-blocks): raise it, or sample processes",
                                    live_blocks_.load()));
    }
    st = store_->AppendBatch(stream_process_id, seq, events, fresh);
    if (!st.ok()) return st;
    p->stacks_defined += fresh.size();
    for (v1::Stack& s : stacks) {
      p->defined.insert(s.id());
      AddStack(std::move(s));
    }
    const int64_t before = static_cast<int64_t>(p->live.size());
    ApplyEvents(*p, events);
    live_blocks_ += static_cast<int64_t>(p->live.size()) - before;
    p->last_seq = seq;
    p->log_bytes += events.GetCachedSize();
    if (metrics_ != nullptr) metrics_->OnBatch(events.kinds_size());
    // The batch is durable and applied; a failed snapshot only postpones
    // compaction (the batches it would replace are still there).
    if (absl::Status snap = MaybeSnapshot(stream_process_id, *p); !snap.ok()) {
      static std::atomic<bool> warned{false};
      WarnOnce(warned, absl::StrCat("snapshot of process ", FormatProcessId(stream_process_id),
                                    " failed, compaction postponed: ", snap.message()));
      if (metrics_ != nullptr) metrics_->OnStorageError();
    }
    return seq;
  }
  // End: the live heap at this point is the exit leak report.
  v1::StoredProcess rec = p->rec;
  *rec.mutable_end() = msg.end();
  rec.set_ended(true);
  rec.set_ended_unix_nanos(UnixNanos());
  rec.set_last_seq(seq);
  rec.set_dropped_events(std::max(rec.dropped_events(), msg.end().dropped_events()));
  rec.set_unwind_failures(std::max(rec.unwind_failures(), msg.end().unwind_failures()));
  if (rec.ring_damage().empty()) rec.set_ring_damage(msg.end().ring_damage());
  // What the forwarder's exit scan found still pointed to, by stack: taken
  // only for stacks live here, and never more than is live (a client's
  // claim, not to be trusted beyond that).
  using Claims = absl::flat_hash_map<uint64_t, std::pair<uint64_t, uint64_t>>;
  auto sum = [&](const google::protobuf::RepeatedPtrField<v1::StackTotal>& totals) {
    Claims by_stack;
    if (!rec.end().exit_scan().done()) return by_stack;
    for (const v1::StackTotal& r : totals) {
      auto& [bytes, blocks] = by_stack[r.stack_id()];
      bytes = bytes + r.bytes() < bytes ? UINT64_MAX : bytes + r.bytes();
      blocks = blocks + r.blocks() < blocks ? UINT64_MAX : blocks + r.blocks();
    }
    return by_stack;
  };
  const Claims reachable = sum(rec.end().exit_scan().reachable());
  const Claims indirect = sum(rec.end().exit_scan().indirect());
  rec.mutable_end()->mutable_exit_scan()->clear_reachable();
  rec.mutable_end()->mutable_exit_scan()->clear_indirect();
  if (std::string* why = rec.mutable_end()->mutable_exit_scan()->mutable_skipped();
      why->size() > 512) {
    size_t cut = 512;
    while (cut > 0 && (static_cast<unsigned char>((*why)[cut]) & 0xC0) == 0x80) --cut;
    why->resize(cut);  // at a character's start: still UTF-8
  }
  if (!msg.end().has_exit_scan()) rec.mutable_end()->clear_exit_scan();
  for (const auto& [stack_id, t] : p->by_stack) {
    if (t.blocks == 0) continue;
    v1::StackTotal* e = rec.add_exit_leaks();
    e->set_stack_id(stack_id);
    e->set_bytes(t.bytes);
    e->set_blocks(t.blocks);
    e->set_est_bytes(t.est_bytes.ToDouble());
    e->set_est_blocks(t.est_blocks.ToDouble());
    if (auto r = reachable.find(stack_id); r != reachable.end()) {
      e->set_reachable_bytes(std::min(r->second.first, t.bytes));
      e->set_reachable_blocks(std::min(r->second.second, t.blocks));
    }
    if (auto r = indirect.find(stack_id); r != indirect.end()) {  // within what was lost
      e->set_indirect_bytes(std::min(r->second.first, t.bytes - e->reachable_bytes()));
      e->set_indirect_blocks(std::min(r->second.second, t.blocks - e->reachable_blocks()));
    }
  }
  absl::Status st = store_->EndProcess(stream_process_id, rec);
  if (!st.ok()) return st;
  for (const v1::StackTotal& e : rec.exit_leaks()) {
    Announce(stream_process_id, *p, "exit", e.stack_id(), e.est_bytes(), e.est_blocks(), 0, 0);
  }
  p->rec = std::move(rec);
  p->last_seq = seq;
  live_blocks_ -= static_cast<int64_t>(p->live.size());
  p->live.clear();
  p->defined.clear();
  p->defined_unknown = false;
  p->by_stack.clear();
  p->total = {};
  // Nothing of an ended process is read again: its ring positions are not
  // kept (not stored either, so a restart answers the same).
  p->lane_positions.clear();
  return seq;
}

absl::StatusOr<size_t> HeapState::Expire(int64_t now) {
  if (options_.retention_seconds <= 0) return 0;
  const int64_t cutoff = now - static_cast<int64_t>(options_.retention_seconds * 1e9);
  std::vector<std::pair<uint64_t, std::shared_ptr<Process>>> all;
  {
    absl::MutexLock lock(&mu_);
    all.assign(procs_.begin(), procs_.end());
  }
  absl::flat_hash_set<uint64_t> expired;
  for (const auto& [id, p] : all) {
    absl::MutexLock lock(&p->mu);
    if (!p->rec.ended()) continue;
    // When the end was recorded (records from before that field: when the
    // forwarder said it ended, else when the process arrived).
    int64_t ended = p->rec.ended_unix_nanos();
    if (ended == 0) ended = p->rec.end().unix_nanos();
    if (ended == 0) ended = p->rec.received_unix_nanos();
    if (ended < cutoff) expired.insert(id);
  }
  if (expired.empty()) return 0;
  // Stacks that a remaining process uses or may use again are kept.
  absl::WriterMutexLock stack_use(&stack_use_mu_);
  absl::flat_hash_set<uint64_t> keep;
  bool keep_all = false;
  for (const auto& [id, p] : all) {
    if (expired.contains(id)) continue;
    absl::MutexLock lock(&p->mu);
    if (p->rec.ended()) {
      for (const v1::StackTotal& e : p->rec.exit_leaks()) keep.insert(e.stack_id());
      continue;
    }
    keep_all |= p->defined_unknown;
    keep.insert(p->defined.begin(), p->defined.end());
    for (const auto& [stack, t] : p->by_stack) keep.insert(stack);
  }
  std::vector<uint64_t> unused;
  if (!keep_all) {
    absl::MutexLock lock(&stacks_mu_);
    for (const auto& [id, entry] : stacks_) {
      if (!keep.contains(id)) unused.push_back(id);
    }
  }
  std::vector<uint64_t> ids(expired.begin(), expired.end());
  if (absl::Status st = store_->Forget(ids, unused); !st.ok()) return st;
  {
    absl::MutexLock lock(&mu_);
    for (uint64_t id : ids) procs_.erase(id);
  }
  {
    absl::MutexLock lock(&stacks_mu_);
    for (uint64_t id : unused) stacks_.erase(id);
  }
  if (absl::Status st = store_->Compact(); !st.ok()) return st;
  return ids.size();
}

std::vector<uint64_t> HeapState::LanePositions(uint64_t process_id) const {
  std::shared_ptr<Process> p = Find(process_id);
  if (p == nullptr) return {};
  absl::MutexLock lock(&p->mu);
  return p->lane_positions;
}

v1::ProcessInfo HeapState::Info(uint64_t id, const Process& p) const {
  absl::MutexLock lock(&p.mu);
  v1::ProcessInfo info;
  info.set_process_id(FormatProcessId(id));
  *info.mutable_hello() = p.rec.hello();
  info.set_state(Lost(p, Now()) ? "lost" : StateOf(p.rec));
  if (p.rec.ended()) *info.mutable_end() = p.rec.end();
  Estimate bytes = p.total.est_bytes, blocks = p.total.est_blocks;
  if (p.rec.ended()) {
    for (const auto& e : p.rec.exit_leaks()) {
      bytes += Estimate::Of(e.est_bytes());
      blocks += Estimate::Of(e.est_blocks());
    }
  }
  info.set_live_bytes(bytes.Rounded());
  info.set_live_blocks(blocks.Rounded());
  info.set_estimated(p.rec.hello().sample_bytes() != 0);
  // Pairs cancelled in the forwarder were two events each.
  info.set_events(p.rec.events() + 2 * p.rec.cancelled_pairs());
  info.set_dropped_events(p.rec.dropped_events());
  info.set_unwind_failures(p.rec.unwind_failures());
  info.set_ring_damage(p.rec.ring_damage());
  info.set_last_seq(p.last_seq);
  return info;
}

v1::ListProcessesResponse HeapState::ListProcesses(const v1::ListProcessesRequest& req) const {
  std::vector<std::pair<uint64_t, std::shared_ptr<Process>>> all;
  {
    absl::MutexLock lock(&mu_);
    all.assign(procs_.begin(), procs_.end());
  }
  v1::ListProcessesResponse resp;
  for (const auto& [id, p] : all) {
    v1::ProcessInfo info = Info(id, *p);
    if (!info.has_hello()) continue;  // hello still being written
    if (!req.service().empty() && info.hello().service() != req.service()) continue;
    *resp.add_processes() = std::move(info);
  }
  std::sort(resp.mutable_processes()->begin(), resp.mutable_processes()->end(),
            [](const v1::ProcessInfo& a, const v1::ProcessInfo& b) {
              if (a.hello().start_unix_nanos() != b.hello().start_unix_nanos()) {
                return a.hello().start_unix_nanos() < b.hello().start_unix_nanos();
              }
              return a.process_id() < b.process_id();
            });
  return resp;
}

absl::Status HeapState::ForEachProcess(const ProcessFilter& filter,
                                      const std::function<void(const ProcessView&)>& fn) const {
  std::vector<std::pair<uint64_t, std::shared_ptr<Process>>> chosen;
  // The ids a request names, once each (sorted before the lock: a request
  // may name many).
  std::vector<uint64_t> ids = filter.process_ids;
  if (filter.process_id != 0) ids.push_back(filter.process_id);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  {
    absl::MutexLock lock(&mu_);
    if (!ids.empty()) {
      for (uint64_t id : ids) {
        auto it = procs_.find(id);
        if (it == procs_.end()) {
          return absl::NotFoundError(absl::StrCat("no process ", FormatProcessId(id),
                                                  " on this server: `cgoheap ps` lists them"));
        }
        chosen.emplace_back(*it);
      }
    } else {
      chosen.assign(procs_.begin(), procs_.end());
    }
  }
  const int64_t now = Now();
  for (const auto& [id, p] : chosen) {
    absl::MutexLock lock(&p->mu);
    if (!p->rec.has_hello()) continue;  // hello still being written
    if (!filter.service.empty() && p->rec.hello().service() != filter.service) continue;
    fn(ProcessView{id, p->rec, Lost(*p, now), p->by_stack, p->total, p->growing, p->history,
                   p->first_sample});
  }
  return absl::OkStatus();
}

std::shared_ptr<const HeapState::StackEntry> HeapState::FindStack(uint64_t id) const {
  absl::MutexLock lock(&stacks_mu_);
  auto it = stacks_.find(id);
  return it == stacks_.end() ? nullptr : it->second;
}

}  // namespace cgoheap::server
