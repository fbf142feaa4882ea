#include "server/query/pprof.h"

#include <zlib.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "profile.pb.h"
#include "server/ingest/estimate.h"
#include "server/query/reports.h"

namespace cgoheap::server {
namespace {

namespace pb = cgoheap::pprof;

// Builds one profile.proto: interns strings, functions, mappings and
// locations as samples bring them.
class ProfileWriter {
 public:
  ProfileWriter() { Str(""); }

  int64_t Str(const std::string& s) {
    auto [it, fresh] = strings_.try_emplace(s, static_cast<int64_t>(strings_.size()));
    if (fresh) p_.add_string_table(s);
    return it->second;
  }
  void SampleTypes(const char* objects, const char* bytes) {
    for (auto [type, unit] : {std::pair{objects, "count"}, std::pair{bytes, "bytes"}}) {
      pb::ValueType* vt = p_.add_sample_type();
      vt->set_type(Str(type));
      vt->set_unit(Str(unit));
    }
    p_.set_default_sample_type(Str(bytes));
    p_.mutable_period_type()->set_type(Str("space"));
    p_.mutable_period_type()->set_unit(Str("bytes"));
  }
  void Comment(const std::string& text) { p_.add_comment(Str(text)); }
  pb::Profile& profile() { return p_; }

  // One sample: the whole stack, and its objects and bytes.
  pb::Sample* AddSample(const v1::Stack& stack, uint64_t objects, uint64_t bytes) {
    pb::Sample* s = p_.add_sample();
    const int n = stack.frames_size();
    for (int i = 0; i < n;) {
      // A location is one machine frame: a frame and the calls inlined into
      // it (same pc, same object), innermost first.
      int j = i;
      while (j + 1 < n && stack.frames(j).inlined() &&
             stack.frames(j + 1).pc() == stack.frames(j).pc() &&
             stack.frames(j + 1).object() == stack.frames(j).object()) {
        ++j;
      }
      s->add_location_id(LocationId(stack, i, j));
      i = j + 1;
    }
    if (n == 0) {
      v1::Stack unknown;
      unknown.add_frames()->set_function(absl::StrCat("[stack ", Hex(stack.id()),
                                                      ": its frames are unknown to cgoheapd]"));
      s->add_location_id(LocationId(unknown, 0, 0));
    }
    s->add_value(static_cast<int64_t>(std::min<uint64_t>(objects, INT64_MAX)));
    s->add_value(static_cast<int64_t>(std::min<uint64_t>(bytes, INT64_MAX)));
    return s;
  }
  void Label(pb::Sample* s, const std::string& key, const std::string& value) {
    pb::Label* l = s->add_label();
    l->set_key(Str(key));
    l->set_str(Str(value));
  }
  void Label(pb::Sample* s, const std::string& key, int64_t num, const std::string& unit) {
    pb::Label* l = s->add_label();
    l->set_key(Str(key));
    l->set_num(num);
    l->set_num_unit(Str(unit));
  }

  std::string Serialize() {
    for (auto& [key, m] : mappings_) {
      pb::Mapping* out = p_.mutable_mapping(static_cast<int>(m.id - 1));
      out->set_memory_start(m.low);
      out->set_memory_limit(m.high == UINT64_MAX ? m.high : m.high + 1);  // pcs come from clients
    }
    // pprof takes the first mapping for the program ("File:" in its
    // reports): the executable, where the Go frames are.
    if (main_mapping_ > 1) {
      auto renumber = [&](uint64_t id) {
        return id == main_mapping_ ? 1 : id < main_mapping_ ? id + 1 : id;
      };
      for (pb::Mapping& m : *p_.mutable_mapping()) m.set_id(renumber(m.id()));
      for (pb::Location& l : *p_.mutable_location()) {
        if (l.mapping_id() != 0) l.set_mapping_id(renumber(l.mapping_id()));
      }
      std::stable_sort(p_.mutable_mapping()->begin(), p_.mutable_mapping()->end(),
                       [](const pb::Mapping& a, const pb::Mapping& b) { return a.id() < b.id(); });
    }
    return p_.SerializeAsString();
  }

 private:
  static std::string Hex(uint64_t v) { return HeapState::FormatProcessId(v); }

  uint64_t FunctionId(const v1::Frame& f) {
    auto [it, fresh] =
        functions_.try_emplace(std::pair{f.function(), f.file()}, p_.function_size() + 1);
    if (fresh) {
      pb::Function* fn = p_.add_function();
      fn->set_id(it->second);
      fn->set_name(Str(f.function()));
      fn->set_system_name(fn->name());
      fn->set_filename(Str(f.file()));
    }
    return it->second;
  }

  // The object a frame is in, by path and build id; 0 for frames in none
  // (the allocator's entry point, a frame the forwarder could not place).
  uint64_t MappingId(const v1::Frame& f) {
    if (f.object().empty()) return 0;
    auto [it, fresh] = mappings_.try_emplace(std::pair{f.object(), f.build_id()});
    MappingRange& m = it->second;
    if (fresh) {
      m.id = p_.mapping_size() + 1;
      pb::Mapping* out = p_.add_mapping();
      out->set_id(m.id);
      out->set_filename(Str(f.object()));
      out->set_build_id(Str(f.build_id()));
      // Symbolized already: pprof must not look for the binaries.
      out->set_has_functions(true);
      out->set_has_filenames(true);
      out->set_has_line_numbers(true);
      out->set_has_inline_frames(true);
      m.low = f.pc();
      m.high = f.pc();
    }
    m.low = std::min(m.low, f.pc());
    m.high = std::max(m.high, f.pc());
    return m.id;
  }

  uint64_t LocationId(const v1::Stack& stack, int from, int to) {
    std::string key;
    for (int i = from; i <= to; ++i) {
      const v1::Frame& f = stack.frames(i);
      absl::StrAppend(&key, f.pc(), "\x01", f.object(), "\x01", f.build_id(), "\x01",
                      f.function(), "\x01", f.file(), "\x01", f.line(), "\x02");
    }
    auto [it, fresh] = locations_.try_emplace(key, p_.location_size() + 1);
    if (fresh) {
      pb::Location* loc = p_.add_location();
      loc->set_id(it->second);
      loc->set_address(stack.frames(to).pc());
      loc->set_mapping_id(MappingId(stack.frames(to)));
      if (main_mapping_ == 0 && stack.frames(to).go()) main_mapping_ = loc->mapping_id();
      for (int i = from; i <= to; ++i) {
        pb::Line* line = loc->add_line();
        line->set_function_id(FunctionId(stack.frames(i)));
        line->set_line(stack.frames(i).line());
      }
    }
    return it->second;
  }

  struct MappingRange {
    uint64_t id = 0;
    uint64_t low = 0, high = 0;
  };
  pb::Profile p_;
  absl::flat_hash_map<std::string, int64_t> strings_;
  absl::flat_hash_map<std::pair<std::string, std::string>, uint64_t> functions_;
  absl::flat_hash_map<std::pair<std::string, std::string>, MappingRange> mappings_;
  absl::flat_hash_map<std::string, uint64_t> locations_;
  uint64_t main_mapping_ = 0;  // the mapping of the first Go frame seen
};

std::string Scope(const v1::ProfileRequest& req) {
  if (!req.process_id().empty()) return absl::StrCat("process ", req.process_id());
  if (!req.service().empty()) return absl::StrCat("service ", req.service());
  return "every service";
}

std::string TimeText(int64_t unix_nanos) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixNanos(unix_nanos), absl::UTCTimeZone());
}

void SampledComment(ProfileWriter& w, uint64_t max_rate, bool mixed) {
  if (max_rate == 0) {
    w.Comment("exact: every allocation recorded");
    return;
  }
  w.Comment(absl::StrCat("sampled: about one allocation recorded per ", max_rate,
                         " bytes allocated", mixed ? " (at most; some processes at other rates)" : "",
                         "; values are unbiased estimates of the whole heap"));
}

void HiddenComment(ProfileWriter& w, uint64_t stacks, uint64_t bytes) {
  if (stacks == 0) return;
  w.Comment(absl::StrCat("left out: ", stacks, " stacks of the Go runtime and the C library (",
                         bytes, " bytes); cgoheap pprof --all includes them"));
}

// The value of a stack's samples at time t: the last at or before it (none:
// the stack had nothing live then).
const GrowthSample* At(const std::vector<GrowthSample>& samples, int64_t t) {
  auto it = std::upper_bound(samples.begin(), samples.end(), t,
                             [](int64_t v, const GrowthSample& s) { return v < s.t; });
  return it == samples.begin() ? nullptr : &*(it - 1);
}

absl::StatusOr<Profile> LiveProfile(const HeapState& state, const v1::ProfileRequest& req,
                                    const HeapState::ProcessFilter& filter) {
  const int64_t now = state.Now();
  if (req.at_unix_nanos() != 0 && req.seconds_ago() != 0) {
    return absl::InvalidArgumentError("give the time as at_unix_nanos or as seconds_ago, not both");
  }
  if (!(req.seconds_ago() >= 0) || req.seconds_ago() > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat("seconds_ago ", req.seconds_ago(), " is not a time in the past"));
  }
  const int64_t at = req.seconds_ago() > 0
                         ? now - static_cast<int64_t>(req.seconds_ago() * 1e9)
                         : req.at_unix_nanos();
  const auto window = static_cast<int64_t>(state.options().leak_window_seconds * 1e9);
  if (at != 0) {
    if (at > now) {
      return absl::InvalidArgumentError(
          absl::StrCat("the time asked for, ", TimeText(at), ", is after now (", TimeText(now), ")"));
    }
    if (at < now - window) {
      return absl::OutOfRangeError(absl::StrCat(
          "cgoheapd keeps the live heap's history for its leak window (--leak-window=",
          FormatDuration(state.options().leak_window_seconds), "): ask for a time after ",
          TimeText(now - window)));
    }
  }
  struct Acc {
    Estimate bytes, blocks;
  };
  absl::flat_hash_map<uint64_t, Acc> by_stack;
  Profile out;
  uint64_t max_rate = 0, unsampled = 0;
  bool mixed = false;
  absl::Status st = state.ForEachProcess(filter, [&](const HeapState::ProcessView& p) {
    const uint64_t rate = p.rec.hello().sample_bytes();
    auto count = [&] {
      ++out.processes;
      if (out.processes > 1 && rate != max_rate) mixed = true;
      max_rate = std::max(max_rate, rate);
    };
    if (at == 0) {
      if (p.rec.ended() || p.lost) return;
      count();
      for (const auto& [stack, t] : p.live_by_stack) {
        Acc& a = by_stack[stack];
        a.bytes += t.est_bytes;
        a.blocks += t.est_blocks;
      }
      return;
    }
    // Running at `at`: started before it, not ended before it.
    if (p.rec.hello().start_unix_nanos() > at) return;
    if (p.rec.ended() && p.rec.ended_unix_nanos() != 0 && p.rec.ended_unix_nanos() <= at) return;
    if (p.history_since == 0 || p.history_since > at) {
      ++unsampled;
      return;
    }
    count();
    for (const auto& [stack, samples] : p.history) {
      if (const GrowthSample* s = At(samples, at); s != nullptr) {
        Acc& a = by_stack[stack];
        a.bytes += Estimate::Of(s->bytes);
        a.blocks += Estimate::Of(s->blocks);
      }
    }
  });
  if (!st.ok()) return NamedAsAsked(st, req.process_id());

  ProfileWriter w;
  w.SampleTypes("inuse_objects", "inuse_space");
  w.profile().set_time_nanos(at != 0 ? at : now);
  w.profile().set_period(static_cast<int64_t>(max_rate));
  w.Comment(absl::StrCat("cgoheap: live C heap of ", out.processes, " running process",
                         out.processes == 1 ? "" : "es", " (", Scope(req), ") at ",
                         TimeText(at != 0 ? at : now),
                         at != 0 ? ", from the samples kept for growth detection" : ""));
  if (unsampled > 0) {
    w.Comment(absl::StrCat("left out: ", unsampled, " process", unsampled == 1 ? "" : "es",
                           " running then but not yet sampled (cgoheapd samples every ",
                           FormatDuration(GrowthResolution(window) / 1e9), ")"));
  }
  SampledComment(w, max_rate, mixed);
  // Largest first, so the profile reads in the order pprof shows it.
  std::vector<std::pair<uint64_t, const Acc*>> order;
  for (const auto& [stack, a] : by_stack) {
    if (a.blocks.Rounded() > 0 || a.bytes.Rounded() > 0) order.emplace_back(stack, &a);
  }
  std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
    if (x.second->bytes != y.second->bytes) return x.second->bytes > y.second->bytes;
    return x.first < y.first;
  });
  uint64_t hidden = 0, hidden_bytes = 0;
  for (const auto& [stack_id, a] : order) {
    std::shared_ptr<const HeapState::StackEntry> entry = state.FindStack(stack_id);
    if (entry != nullptr && entry->cls.internal && !req.all()) {
      ++hidden;
      hidden_bytes += a->bytes.Rounded();
      continue;
    }
    v1::Stack unknown;
    unknown.set_id(stack_id);
    w.AddSample(entry != nullptr ? entry->stack : unknown, a->blocks.Rounded(), a->bytes.Rounded());
    ++out.samples;
  }
  HiddenComment(w, hidden, hidden_bytes);
  absl::StatusOr<std::string> gz = Gzip(w.Serialize());
  if (!gz.ok()) return gz.status();
  out.gzipped = std::move(*gz);
  return out;
}

absl::StatusOr<Profile> LeaksProfile(const HeapState& state, const v1::ProfileRequest& req) {
  if (req.at_unix_nanos() != 0 || req.seconds_ago() != 0) {
    return absl::InvalidArgumentError(
        "a profile of leaks is as of now: leave out the time (profiles of the past are of the "
        "live heap, which -diff_base compares)");
  }
  v1::LeaksRequest lr;
  lr.set_service(req.service());
  lr.set_process_id(req.process_id());
  lr.set_all(req.all());
  lr.set_limit(100000);
  absl::StatusOr<v1::LeaksResponse> leaks = LeaksReport(state, lr);
  if (!leaks.ok()) return leaks.status();
  ProfileWriter w;
  w.SampleTypes("leak_objects", "leak_space");
  const int64_t now = state.Now();
  w.profile().set_time_nanos(now);
  uint64_t max_rate = 0;
  bool mixed = false;
  for (const v1::Leak& l : leaks->leaks()) {
    if (max_rate != 0 && l.sample_bytes() != max_rate) mixed = true;
    max_rate = std::max(max_rate, l.sample_bytes());
  }
  w.profile().set_period(static_cast<int64_t>(max_rate));
  w.Comment(absl::StrCat("cgoheap: leaks of ", leaks->processes(), " process",
                         leaks->processes() == 1 ? "" : "es", " (", Scope(req), ") at ",
                         TimeText(now),
                         ": kind=exit, live when the process ended; kind=growth, rising through "
                         "the whole leak window in a running process"));
  SampledComment(w, max_rate, mixed);
  HiddenComment(w, leaks->hidden(), leaks->hidden_bytes());
  if (leaks->exec_hidden() > 0) {
    w.Comment(absl::StrCat("left out: what ", leaks->exec_hidden(), " program image",
                           leaks->exec_hidden() == 1 ? "" : "s",
                           " held when replaced by exec (", leaks->exec_hidden_bytes(),
                           " bytes; the exec freed them); cgoheap pprof --all includes them"));
  }
  if (leaks->omitted() > 0) {
    w.Comment(absl::StrCat("left out: the ", leaks->omitted(), " smallest leaks (",
                           leaks->omitted_bytes(), " bytes), past 100000"));
  }
  Profile out;
  out.processes = leaks->processes();
  for (const v1::Leak& l : leaks->leaks()) {
    pprof::Sample* s = w.AddSample(l.stack(), l.blocks(), l.bytes());
    w.Label(s, "kind", l.kind());
    if (l.kind() == "growth") {
      w.Label(s, "growth_rate", static_cast<int64_t>(l.rate_bytes_per_hour()), "bytes/hour");
    }
    ++out.samples;
  }
  absl::StatusOr<std::string> gz = Gzip(w.Serialize());
  if (!gz.ok()) return gz.status();
  out.gzipped = std::move(*gz);
  return out;
}

}  // namespace

absl::StatusOr<std::string> Gzip(const std::string& data) {
  z_stream z{};
  // 15 window bits + 16: a gzip header and trailer instead of zlib's. The
  // fastest level, as Go writes its own profiles.
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return absl::ResourceExhaustedError("cannot compress the profile: zlib has no memory");
  }
  std::string out;
  char buf[64 << 10];
  size_t pos = 0;
  int rc = Z_OK;
  do {  // zlib counts in 32 bits: at most 1 GiB in at a time
    const size_t chunk = std::min<size_t>(data.size() - pos, 1 << 30);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + pos));
    z.avail_in = static_cast<uInt>(chunk);
    pos += chunk;
    const int flush = pos == data.size() ? Z_FINISH : Z_NO_FLUSH;
    do {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      rc = deflate(&z, flush);
      out.append(buf, sizeof buf - z.avail_out);
    } while (z.avail_out == 0);
  } while (pos < data.size());
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return absl::InternalError(absl::StrCat("zlib deflate failed: ", rc));
  return out;
}

absl::StatusOr<Profile> BuildProfile(const HeapState& state, const v1::ProfileRequest& req) {
  absl::StatusOr<HeapState::ProcessFilter> filter = FilterOf(req.service(), req.process_id());
  if (!filter.ok()) return filter.status();
  if (req.leaks()) return LeaksProfile(state, req);
  return LiveProfile(state, req, *filter);
}

}  // namespace cgoheap::server
