#include "server/query/reports.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/ingest/estimate.h"
#include "server/leak/classify.h"

namespace cgoheap::server {
namespace {

using StackEntry = HeapState::StackEntry;

constexpr size_t kMaxListedProcessIds = 20;

// One stack's leak summed over processes.
struct LeakGroup {
  Estimate bytes, blocks;
  uint64_t sample_bytes = 0;
  std::vector<uint64_t> processes;
  double rate = 0;    // growth: bytes per hour, summed
  int64_t since = 0;  // growth: earliest start of the rise
  // exit: of the processes, those scanned at exit, and what was still
  // pointed to in them
  uint32_t scanned = 0;
  uint64_t reachable_bytes = 0, reachable_blocks = 0;
  uint64_t indirect_bytes = 0, indirect_blocks = 0;
};

void AddLeak(const HeapState& state, const char* kind, uint64_t stack_id, LeakGroup& g,
             const v1::LeaksRequest& req, v1::LeaksResponse* resp) {
  std::shared_ptr<const StackEntry> entry = state.FindStack(stack_id);
  bool internal = entry != nullptr && entry->cls.internal;
  uint64_t bytes = g.bytes.Rounded();
  uint64_t blocks = g.blocks.Rounded();
  if (internal && !req.all()) {
    resp->set_hidden(resp->hidden() + 1);
    resp->set_hidden_bytes(resp->hidden_bytes() + bytes);
    return;
  }
  // Scanned in every process, and pointed to in every one: no leak by
  // valgrind's measure.
  const bool all_reachable = g.scanned > 0 && g.scanned == g.processes.size() &&
                             g.reachable_blocks >= blocks && g.sample_bytes == 0;
  if (all_reachable && req.lost_only()) {
    resp->set_reachable_hidden(resp->reachable_hidden() + 1);
    resp->set_reachable_hidden_bytes(resp->reachable_hidden_bytes() + bytes);
    resp->set_reachable_hidden_blocks(resp->reachable_hidden_blocks() + blocks);
    return;
  }
  v1::Leak* leak = resp->add_leaks();
  leak->set_kind(kind);
  leak->set_rate_bytes_per_hour(g.rate);
  leak->set_since_unix_nanos(g.since);
  leak->set_bytes(bytes);
  leak->set_blocks(blocks);
  leak->set_estimated(g.sample_bytes != 0);
  leak->set_sample_bytes(g.sample_bytes);
  leak->set_processes(static_cast<uint32_t>(g.processes.size()));
  leak->set_scanned_processes(g.scanned);
  leak->set_reachable_bytes(std::min(g.reachable_bytes, bytes));
  leak->set_reachable_blocks(std::min(g.reachable_blocks, blocks));
  leak->set_indirect_bytes(std::min(g.indirect_bytes, bytes - leak->reachable_bytes()));
  leak->set_indirect_blocks(std::min(g.indirect_blocks, blocks - leak->reachable_blocks()));
  std::sort(g.processes.begin(), g.processes.end());
  for (size_t i = 0; i < g.processes.size() && i < kMaxListedProcessIds; ++i) {
    leak->add_process_ids(HeapState::FormatProcessId(g.processes[i]));
  }
  if (entry != nullptr) {
    *leak->mutable_stack() = entry->stack;
    leak->set_internal(internal);
    leak->set_internal_reason(entry->cls.reason);
    DescribeLeak(entry->cls, leak);
  } else {
    leak->mutable_stack()->set_id(stack_id);
    leak->set_user_frame(-1);
  }
}

}  // namespace

absl::Status NamedAsAsked(const absl::Status& st, const std::string& process_id) {
  if (!absl::IsNotFound(st)) return st;
  return absl::NotFoundError(
      absl::StrCat("no process ", process_id, " on this server: `cgoheap ps` lists them"));
}

absl::StatusOr<HeapState::ProcessFilter> FilterOf(const std::string& service,
                                                  const std::string& process_id) {
  HeapState::ProcessFilter filter{.service = service};
  if (!process_id.empty() && !HeapState::ParseProcessId(process_id, &filter.process_id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "process id '", process_id, "' is not hex: use an id from `cgoheap ps`"));
  }
  return filter;
}

absl::StatusOr<v1::LeaksResponse> LeaksReport(const HeapState& state, const v1::LeaksRequest& req) {
  absl::StatusOr<HeapState::ProcessFilter> filter = FilterOf(req.service(), req.process_id());
  if (!filter.ok()) return filter.status();
  for (const std::string& id : req.process_ids()) {
    absl::StatusOr<HeapState::ProcessFilter> one = FilterOf("", id);
    if (!one.ok()) return one.status();
    if (one->process_id == 0) continue;  // ""
    filter->process_ids.push_back(one->process_id);
  }
  absl::flat_hash_map<uint64_t, LeakGroup> groups;   // exit leaks, by stack
  absl::flat_hash_map<uint64_t, LeakGroup> growing;  // growth leaks, by stack
  v1::LeaksResponse resp;
  absl::Status st = state.ForEachProcess(*filter, [&](const HeapState::ProcessView& p) {
    const uint64_t rate = p.rec.hello().sample_bytes();
    if (p.rec.ended() && p.rec.end().exec() && !req.all()) {
      Estimate bytes, blocks;
      for (const v1::StackTotal& e : p.rec.exit_leaks()) {
        bytes += Estimate::Of(e.est_bytes());
        blocks += Estimate::Of(e.est_blocks());
      }
      resp.set_exec_hidden(resp.exec_hidden() + 1);
      resp.set_exec_hidden_bytes(resp.exec_hidden_bytes() + bytes.Rounded());
      resp.set_exec_hidden_blocks(resp.exec_hidden_blocks() + blocks.Rounded());
      return;
    }
    resp.set_processes(resp.processes() + 1);
    resp.set_dropped_events(resp.dropped_events() + p.rec.dropped_events());
    resp.set_unwind_failures(resp.unwind_failures() + p.rec.unwind_failures());
    if (p.rec.hello().go_crossing_unknown()) {
      resp.set_go_crossing_unknown(resp.go_crossing_unknown() + 1);
    }
    if (!p.rec.ring_damage().empty()) resp.set_damaged_rings(resp.damaged_rings() + 1);
    if (p.rec.hello().foreign_allocator_size() > 0) {
      resp.set_foreign_allocator(resp.foreign_allocator() + 1);
      for (const std::string& f : p.rec.hello().foreign_allocator()) {
        const auto& seen = resp.foreign_allocator_functions();
        if (seen.size() < 16 && std::find(seen.begin(), seen.end(), f) == seen.end()) {
          resp.add_foreign_allocator_functions(f);
        }
      }
    }
    const bool scanned = p.rec.ended() && p.rec.end().exit_scan().done();
    if (scanned) {
      resp.set_scanned(resp.scanned() + 1);
    } else if (p.rec.ended() && p.rec.end().has_exit_scan()) {
      resp.set_not_scanned(resp.not_scanned() + 1);
      const std::string& why = p.rec.end().exit_scan().skipped();
      const auto& seen = resp.not_scanned_reasons();
      if (seen.size() < 8 && std::find(seen.begin(), seen.end(), why) == seen.end()) {
        resp.add_not_scanned_reasons(why);
      }
    }
    for (const v1::StackTotal& e : p.rec.exit_leaks()) {
      LeakGroup& g = groups[e.stack_id()];
      g.bytes += Estimate::Of(e.est_bytes());
      g.blocks += Estimate::Of(e.est_blocks());
      g.sample_bytes = std::max(g.sample_bytes, rate);
      g.processes.push_back(p.id);
      if (scanned) {
        ++g.scanned;
        g.reachable_bytes += e.reachable_bytes();
        g.reachable_blocks += e.reachable_blocks();
        g.indirect_bytes += e.indirect_bytes();
        g.indirect_blocks += e.indirect_blocks();
      }
    }
    // A lost process's growth is not current: it is not reported.
    if (p.lost) return;
    for (const auto& [stack, growth] : p.growing) {
      auto live = p.live_by_stack.find(stack);
      if (live == p.live_by_stack.end()) continue;
      LeakGroup& g = growing[stack];
      g.bytes += live->second.est_bytes;
      g.blocks += live->second.est_blocks;
      g.sample_bytes = std::max(g.sample_bytes, rate);
      g.processes.push_back(p.id);
      g.rate += growth.rate_per_hour;
      g.since = g.since == 0 ? growth.since : std::min(g.since, growth.since);
    }
  });
  if (!st.ok()) return NamedAsAsked(st, req.process_id());
  for (auto& [stack_id, g] : growing) AddLeak(state, "growth", stack_id, g, req, &resp);
  for (auto& [stack_id, g] : groups) AddLeak(state, "exit", stack_id, g, req, &resp);
  // Growth leaks (still running, still growing) first, then exit leaks;
  // largest first within each: by what was lost (not still pointed to at
  // exit), then by what of it nothing pointed to, then by bytes.
  std::sort(resp.mutable_leaks()->begin(), resp.mutable_leaks()->end(),
            [](const v1::Leak& a, const v1::Leak& b) {
              if (a.kind() != b.kind()) return a.kind() == "growth";
              const uint64_t lost_a = a.bytes() - a.reachable_bytes();
              const uint64_t lost_b = b.bytes() - b.reachable_bytes();
              const uint64_t direct_a = lost_a - a.indirect_bytes();
              const uint64_t direct_b = lost_b - b.indirect_bytes();
              if (lost_a != lost_b) return lost_a > lost_b;
              if (direct_a != direct_b) return direct_a > direct_b;
              if (a.bytes() != b.bytes()) return a.bytes() > b.bytes();
              if (a.blocks() != b.blocks()) return a.blocks() > b.blocks();
              return a.stack().id() < b.stack().id();
            });
  // A fleet can have more distinct leaks than a message should carry.
  const int limit = static_cast<int>(req.limit() == 0 ? 1000 : std::min(req.limit(), 100000u));
  if (resp.leaks_size() > limit) {
    for (int i = limit; i < resp.leaks_size(); ++i) {
      resp.set_omitted(resp.omitted() + 1);
      resp.set_omitted_bytes(resp.omitted_bytes() + resp.leaks(i).bytes());
    }
    resp.mutable_leaks()->DeleteSubrange(limit, resp.leaks_size() - limit);
  }
  return resp;
}

absl::StatusOr<v1::TopResponse> TopReport(const HeapState& state, const v1::TopRequest& req) {
  const std::string by = req.by().empty() ? "stack" : req.by();
  if (by != "stack" && by != "function" && by != "line") {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot group by '", by, "': use stack, function or line"));
  }
  const uint32_t limit = req.limit() == 0 ? 20 : std::min<uint32_t>(req.limit(), 1000);
  struct Entry {
    Estimate bytes, blocks;
    uint32_t processes = 0;
    uint64_t last_process = 0;
    bool estimated = false;
    uint64_t stack_id = 0;
    const v1::Frame* frame = nullptr;
    std::shared_ptr<const StackEntry> keep;  // owns frame
  };
  absl::flat_hash_map<std::string, Entry> entries;
  v1::TopResponse resp;
  Estimate total;
  absl::Status st = state.ForEachProcess({.service = req.service()}, [&](const HeapState::ProcessView& p) {
    if (p.rec.ended() || p.lost) return;
    resp.set_processes(resp.processes() + 1);
    total += p.live.est_bytes;
    for (const auto& [stack_id, t] : p.live_by_stack) {
      std::shared_ptr<const StackEntry> se = state.FindStack(stack_id);
      const v1::Frame* frame = nullptr;
      std::string key = absl::StrCat(stack_id);
      if (by != "stack" && se != nullptr && se->stack.frames_size() > 0) {
        // The line that allocated.
        frame = &se->stack.frames(SiteFrame(*se));
        key = by == "function" ? frame->function()
                               : absl::StrCat(frame->function(), "\n", frame->file(), ":",
                                              frame->line());
      }
      Entry& e = entries[key];
      e.bytes += t.est_bytes;
      e.blocks += t.est_blocks;
      e.estimated |= p.rec.hello().sample_bytes() != 0;
      if (e.last_process != p.id) {
        e.last_process = p.id;
        ++e.processes;
      }
      e.stack_id = stack_id;
      e.frame = frame;
      e.keep = se;
    }
  });
  if (!st.ok()) return st;
  resp.set_total_bytes(total.Rounded());
  std::vector<Entry*> order;
  for (auto& [key, e] : entries) {
    if (e.blocks.Rounded() > 0) order.push_back(&e);
  }
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    if (a->bytes != b->bytes) return a->bytes > b->bytes;
    return a->stack_id < b->stack_id;
  });
  for (size_t i = 0; i < order.size() && i < limit; ++i) {
    const Entry& e = *order[i];
    v1::TopEntry* out = resp.add_entries();
    out->set_bytes(e.bytes.Rounded());
    out->set_blocks(e.blocks.Rounded());
    out->set_processes(e.processes);
    out->set_estimated(e.estimated);
    if (by == "stack") {
      if (e.keep != nullptr) *out->mutable_stack() = e.keep->stack;
      out->mutable_stack()->set_id(e.stack_id);
    } else if (e.frame != nullptr) {
      out->set_function(e.frame->function());
      if (by == "line") {
        out->set_file(e.frame->file());
        out->set_line(e.frame->line());
      }
    }
  }
  return resp;
}

absl::flat_hash_map<std::string, ServiceSuspects> Suspects(const HeapState& state, int top_k) {
  absl::flat_hash_map<std::string, ServiceSuspects> out;
  // service -> stack -> live bytes in growing stacks
  absl::flat_hash_map<std::string, absl::flat_hash_map<uint64_t, Estimate>> stacks;
  // Every process: the filter names none.
  (void)state.ForEachProcess({}, [&](const HeapState::ProcessView& p) {
    if (p.rec.ended() || p.lost) return;
    const std::string& svc = p.rec.hello().service();
    out[svc];
    for (const auto& [stack, g] : p.growing) {
      if (auto it = p.live_by_stack.find(stack); it != p.live_by_stack.end()) {
        stacks[svc][stack] += it->second.est_bytes;
      }
    }
  });
  for (auto& [svc, s] : out) {
    auto& by_stack = stacks[svc];
    s.stacks = by_stack.size();
    Estimate total;
    std::vector<std::pair<Estimate, uint64_t>> order;
    for (const auto& [stack, bytes] : by_stack) {
      total += bytes;
      order.emplace_back(bytes, stack);
    }
    s.bytes = total.ToDouble();
    std::sort(order.rbegin(), order.rend());
    for (size_t i = 0; i < order.size() && i < static_cast<size_t>(top_k); ++i) {
      ServiceSuspects::Stack st;
      st.id = HeapState::FormatProcessId(order[i].second);
      st.bytes = order[i].first.ToDouble();
      if (std::shared_ptr<const StackEntry> e = state.FindStack(order[i].second); e != nullptr) {
        if (int f = SiteFrame(*e); f >= 0) {
          const v1::Frame& fr = e->stack.frames(f);
          st.site = SiteLabel(absl::StrCat(fr.function(), " ", fr.file(), ":", fr.line()));
        }
      }
      s.top.push_back(std::move(st));
    }
  }
  return out;
}

int SiteFrame(const HeapState::StackEntry& e) {
  return e.cls.user_frame >= 0 ? e.cls.user_frame : std::min(1, e.stack.frames_size() - 1);
}

}  // namespace cgoheap::server
