// HeapState::Apply over sequences of messages, as any number of forwarders
// (or strangers) could send them: hellos, batches and ends of a few
// processes, in any order, with resends, gaps, wrong stack ids, frees of
// unknown blocks, invalid kinds and counters that go backwards; now and then
// a message that is any bytes at all. Small snapshot thresholds and chunks
// make compaction happen often.
//
// Checked beyond memory safety: after the sequence, the state cgoheapd
// rebuilds from what it stored (HeapState::Load, as at a restart) answers
// every query exactly as the state before it did, lane positions included.
// RocksDB runs on an in-memory file system.
#include <rocksdb/env.h>

#include <cstdlib>
#include <memory>
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <zlib.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_input.h"
#include "proto/stack_id.h"
#include "server/ingest/heap_state.h"
#include "server/query/pprof.h"
#include "server/query/reports.h"
#include "profile.pb.h"
#include "server/storage/store.h"

namespace {

using namespace cgoheap;
using server::HeapState;
using server::Store;

rocksdb::Env* MemEnv() {
  static rocksdb::Env* env = rocksdb::NewMemEnv(rocksdb::Env::Default());
  return env;
}

constexpr uint64_t kProcessIds[] = {1, 2, 0x8000000000000001ULL, ~uint64_t{0}};
const char* const kServices[] = {"api", "worker", "", "caf\xc3\xa9"};
const char* const kFunctions[] = {"malloc", "C.CString", "main.main", "runtime.cgocall",
                                  "sqlite3Malloc", "_cgo_123_Cfunc_malloc", "runtime.newm1"};

v1::Stack MakeStack(fuzz::FuzzInput& in) {
  v1::Stack s;
  for (size_t n = in.Range(0, 5); n > 0; --n) {
    v1::Frame* f = s.add_frames();
    f->set_function(kFunctions[in.Range(0, 6)]);
    f->set_go(in.Bool());
    if (in.Bool()) {
      f->set_file("/src/main.go");
      f->set_line(static_cast<uint32_t>(in.Range(0, 40)));
    }
  }
  s.set_id(in.Next<uint8_t>() == 0xff ? in.Next<uint64_t>() : StackIdOf(s));  // rarely: a lie
  return s;
}

v1::AgentMessage MakeMessage(fuzz::FuzzInput& in, std::vector<uint64_t>& stack_ids,
                             uint64_t* stream_pid) {
  v1::AgentMessage m;
  const uint64_t pid = kProcessIds[in.Range(0, 3)];
  *stream_pid = pid;
  switch (in.Range(0, 7)) {
    case 0: {
      v1::ProcessHello* h = m.mutable_hello();
      h->set_process_id(in.Next<uint8_t>() == 0 ? 0 : pid);
      h->set_service(kServices[in.Range(0, 3)]);
      h->set_sample_bytes(in.Bool() ? 0 : in.Next<uint32_t>());
      if (in.Bool()) h->set_stream_key(in.Bytes(4));
      h->add_args("prog");
      *stream_pid = in.Bool() ? 0 : pid;
      return m;
    }
    case 1: {
      v1::ProcessEnd* e = m.mutable_end();
      e->set_exited(in.Bool());
      e->set_exit_code(in.Next<int8_t>());
      e->set_signal(in.Next<int8_t>());
      e->set_dropped_events(in.Next<uint8_t>());
      e->set_ring_damage(in.Bool() ? "" : "truncated");
      break;
    }
    case 2: {  // any bytes: what parses is applied as it is
      std::string raw = in.Bytes(96);
      if (!m.ParseFromString(raw)) m.Clear();
      return m;
    }
    default: {
      v1::EventBatch* b = m.mutable_batch();
      for (size_t n = in.Range(0, 2); n > 0; --n) {
        *b->add_new_stacks() = MakeStack(in);
        stack_ids.push_back(b->new_stacks(b->new_stacks_size() - 1).id());
      }
      for (size_t n = in.Range(0, 24); n > 0; --n) {
        const uint8_t kind = in.Next<uint8_t>();
        const bool alloc = kind < 0x90;
        b->add_kinds(kind >= 0xfe ? static_cast<v1::EventKind>(kind) :  // not a kind at all
                         alloc   ? v1::EVENT_KIND_ALLOC
                                 : v1::EVENT_KIND_FREE);
        b->add_addresses(0x1000 + 16 * in.Range(0, 63));  // few addresses: frees meet allocations
        b->add_sizes(alloc ? (in.Bool() ? in.Range(1, 4096) : in.Next<uint64_t>()) : 0);
        uint64_t stack = 0;
        if (alloc && !stack_ids.empty()) stack = stack_ids[in.Range(0, stack_ids.size() - 1)];
        if (in.Next<uint8_t>() == 0xff) stack = in.Next<uint64_t>();
        b->add_stack_ids(stack);
      }
      if (in.Next<uint8_t>() == 0xff) b->add_sizes(1);  // columns of different lengths
      b->set_dropped_events(in.Next<uint8_t>());
      b->set_cancelled_pairs(in.Next<uint8_t>());
      b->set_unwind_failures(in.Next<uint8_t>());
      for (size_t n = in.Range(0, 3); n > 0; --n) b->add_lane_positions(in.Next<uint16_t>());
      break;
    }
  }
  // Mostly the next seq; sometimes a resend, a gap or nonsense.
  const uint8_t how = in.Next<uint8_t>();
  m.set_seq(how < 200 ? 0 : how < 240 ? in.Range(0, 8) : in.Next<uint64_t>());
  return m;
}

std::string Gunzip(const std::string& gz) {
  z_stream z{};
  FUZZ_CHECK(inflateInit2(&z, 15 + 16) == Z_OK, "zlib inflateInit2");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  std::string out;
  char buf[65536];
  int rc;
  do {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&z);
  FUZZ_CHECK(rc == Z_STREAM_END, "a profile is not a whole gzip stream");
  return out;
}

// A profile as pprof would read it: every id and string index it uses
// exists. Returned without what depends on the clock (its time and comments).
std::string CheckedProfile(const std::string& gz) {
  pprof::Profile p;
  FUZZ_CHECK(p.ParseFromString(Gunzip(gz)), "a profile does not parse as profile.proto");
  const int64_t strings = p.string_table_size();
  FUZZ_CHECK(strings > 0 && p.string_table(0).empty(), "string_table[0] must be empty");
  auto str = [&](int64_t i) { FUZZ_CHECK(i >= 0 && i < strings, "string index out of range"); };
  FUZZ_CHECK(p.sample_type_size() == 2, "two sample types");
  for (const auto& t : p.sample_type()) {
    str(t.type());
    str(t.unit());
  }
  absl::flat_hash_set<uint64_t> functions, mappings, locations;
  for (const auto& f : p.function()) {
    FUZZ_CHECK(functions.insert(f.id()).second && f.id() != 0, "function ids unique, nonzero");
    str(f.name());
    str(f.filename());
  }
  for (const auto& m : p.mapping()) {
    FUZZ_CHECK(mappings.insert(m.id()).second && m.id() != 0, "mapping ids unique, nonzero");
    str(m.filename());
    str(m.build_id());
  }
  for (const auto& l : p.location()) {
    FUZZ_CHECK(locations.insert(l.id()).second && l.id() != 0, "location ids unique, nonzero");
    FUZZ_CHECK(l.mapping_id() == 0 || mappings.contains(l.mapping_id()), "unknown mapping id");
    FUZZ_CHECK(l.line_size() > 0, "a location without lines");
    for (const auto& line : l.line()) {
      FUZZ_CHECK(functions.contains(line.function_id()), "unknown function id");
    }
  }
  for (const auto& smp : p.sample()) {
    FUZZ_CHECK(smp.value_size() == 2 && smp.value(0) >= 0 && smp.value(1) >= 0, "two values >= 0");
    FUZZ_CHECK(smp.location_id_size() > 0, "a sample without locations");
    for (uint64_t id : smp.location_id()) FUZZ_CHECK(locations.contains(id), "unknown location id");
    for (const auto& l : smp.label()) str(l.key());
  }
  for (int64_t c : p.comment()) {
    str(c);
    p.mutable_string_table(static_cast<int>(c))->clear();
  }
  p.clear_comment();
  p.clear_time_nanos();
  return p.DebugString();
}

// Everything a client can ask: (what, the answer as text).
using Answers = std::vector<std::pair<std::string, std::string>>;
Answers Ask(const HeapState& state) {
  Answers all;
  v1::ListProcessesRequest lr;
  lr.set_page_size(5000);
  v1::ListProcessesResponse procs = state.ListProcesses(lr);
  all.emplace_back("ListProcesses", procs.DebugString());
  for (const v1::ProcessInfo& p : procs.processes()) {
    uint64_t id = 0;
    FUZZ_CHECK(HeapState::ParseProcessId(p.process_id(), &id), "a listed process id does not parse");
    std::string positions;
    for (uint64_t pos : state.LanePositions(id)) absl::StrAppend(&positions, pos, ",");
    all.emplace_back("LanePositions " + p.process_id(), positions);
  }
  for (bool everything : {false, true}) {
    v1::LeaksRequest req;
    req.set_all(everything);
    absl::StatusOr<v1::LeaksResponse> leaks = LeaksReport(state, req);
    all.emplace_back(everything ? "Leaks --all" : "Leaks",
                     leaks.ok() ? leaks->DebugString() : leaks.status().ToString());
  }
  for (const char* by : {"stack", "function", "line"}) {
    v1::TopRequest req;
    req.set_by(by);
    absl::StatusOr<v1::TopResponse> top = TopReport(state, req);
    all.emplace_back(absl::StrCat("Top by ", by), top.ok() ? top->DebugString() : top.status().ToString());
  }
  for (bool leaks : {false, true}) {
    for (bool everything : {false, true}) {
      v1::ProfileRequest req;
      req.set_leaks(leaks);
      req.set_all(everything);
      absl::StatusOr<server::Profile> p = BuildProfile(state, req);
      all.emplace_back(absl::StrCat("Profile leaks=", leaks, " all=", everything),
                       p.ok() ? CheckedProfile(p->gzipped) : p.status().ToString());
    }
  }
  return all;
}

std::unique_ptr<Store> OpenStore(const std::string& dir) {
  server::StoreOptions opts;
  opts.env = MemEnv();
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, opts);
  FUZZ_CHECK(store.ok(), "RocksDB (in memory) did not open");
  return std::move(*store);
}

HeapState::Options StateOptions() {
  HeapState::Options opts;
  opts.min_log_bytes = 64;
  opts.snapshot_chunk_blocks = 3;
  return opts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One store for every input, emptied before each: opening a RocksDB costs
  // far more than an input. A restart is a new HeapState on what the store
  // holds (the property is about the server's state, not RocksDB's recovery,
  // which ServerTest.AcknowledgedEventsSurviveAPowerLoss covers).
  // Closed at exit, before the leak check: a RocksDB never closed leaves
  // the compaction it queued last in its thread pool's queue, which the
  // pool drops at exit without freeing (LeakSanitizer: 24 bytes from
  // DBImpl::MaybeScheduleFlushOrCompaction, a CI failure); closing it
  // unschedules and frees that.
  static std::unique_ptr<Store> owner = OpenStore("/fuzz/heap_state");
  Store* store = owner.get();
  FUZZ_CHECK(store->Clear().ok(), "the store could not be emptied");
  Answers before;
  {
    HeapState state(store, nullptr, StateOptions());
    FUZZ_CHECK(state.Load().ok(), "an empty store did not load");
    FUZZ_CHECK(state.ListProcesses({}).processes_size() == 0, "Store::Clear left processes");
    fuzz::FuzzInput in(data, size);
    std::vector<uint64_t> stack_ids;
    uint64_t next_seq[4] = {1, 1, 1, 1};
    for (int i = 0; i < 48 && !in.empty(); ++i) {
      uint64_t stream_pid = 0;
      v1::AgentMessage m = MakeMessage(in, stack_ids, &stream_pid);
      size_t slot = 0;
      while (slot < 3 && kProcessIds[slot] != stream_pid) ++slot;
      if (m.seq() == 0 && !m.has_hello()) m.set_seq(next_seq[slot]);
      absl::StatusOr<uint64_t> acked = state.Apply(stream_pid, m);
      if (acked.ok() && !m.has_hello()) next_seq[slot] = *acked + 1;
    }
    before = Ask(state);
  }
  HeapState state(store, nullptr, StateOptions());
  absl::Status loaded = state.Load();
  if (!loaded.ok()) {
    fprintf(stderr, "reload failed: %s\n", std::string(loaded.message()).c_str());
    abort();
  }
  Answers after = Ask(state);
  for (size_t i = 0; i < std::max(before.size(), after.size()); ++i) {
    if (i < before.size() && i < after.size() && before[i] == after[i]) continue;
    fprintf(stderr, "after a reload, %s differs.\nbefore:\n%s\nafter:\n%s\n",
            i < before.size() ? before[i].first.c_str() : after[i].first.c_str(),
            i < before.size() ? before[i].second.c_str() : "(nothing)",
            i < after.size() ? after[i].second.c_str() : "(nothing)");
    abort();
  }
  state.DetectGrowth(1'000'000'000);
  state.DetectGrowth(900'000'000'000);
  (void)Ask(state);
  return 0;
}
