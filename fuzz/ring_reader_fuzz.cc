// The ring reader against a target that writes anything, at any time: the
// ring's header, lane descriptors and records come from the input, and the
// input goes on writing words into the mapping between calls and in the
// middle of a round (right after the reader took a lane's head), as a hostile
// or buggy process sharing the mapping could.
//
// Checked beyond memory safety: every record handed out has at most
// kMaxFrames frames, names an existing lane and is never of the kinds only
// the ring knows (cancelled, taken); positions stay within what
// was written; nothing loops (a bounded number of calls per input).
#include <cstdlib>
#include <cstring>
#include <vector>

#include "agent/ring.h"
#include "client/ring_reader.h"
#include "fuzz/fuzz_input.h"

namespace {

using namespace cgoheap;

struct Target {
  fuzz::FuzzInput* in;
  ring::RingHeader* h;
  size_t words_total;  // the mapping as 64-bit words
  uint32_t lanes;
  uint64_t lane_words;
  std::vector<uint64_t> next_key;
};

uint64_t* Word(Target& t, size_t i) { return reinterpret_cast<uint64_t*>(t.h) + i % t.words_total; }

// Appends one well-formed record (or, sometimes, a slightly wrong one) at the
// lane's head and publishes it, as the agent's writer would.
void AppendRecord(Target& t, uint32_t lane) {
  // The geometry as created: the input may have rewritten the header's.
  ring::LaneDesc& d = ring::Lanes(t.h)[lane];
  uint64_t* words = reinterpret_cast<uint64_t*>(reinterpret_cast<char*>(t.h) + ring::kHeaderBytes +
                                                t.lanes * sizeof(ring::LaneDesc)) +
                    lane * t.lane_words;
  uint64_t head = d.head.load(std::memory_order_relaxed);
  const bool alloc = t.in->Bool();
  unsigned nframes = alloc ? static_cast<unsigned>(t.in->Range(0, ring::kMaxFrames + 2)) : 0;
  unsigned nwords = ring::kRecordFixedWords + nframes;
  if (t.in->Next<uint8_t>() == 0xff) nwords = static_cast<unsigned>(t.in->Range(0, 0xffff));
  const uint64_t mask = t.lane_words - 1;
  const uint64_t key = t.next_key[lane] += t.in->Range(0, 3);
  words[(head + 1) & mask] = key;
  words[(head + 2) & mask] = t.in->Next<uint16_t>() * 16;  // small address space: frees find allocations
  words[(head + 3) & mask] = alloc ? t.in->Next<uint16_t>() : 0;
  for (unsigned f = 0; f < nframes && f + 4 < t.lane_words; ++f) {
    words[(head + 4 + f) & mask] = 0x400000 + t.in->Next<uint16_t>();
  }
  // An allocation may already be cancelled by its thread, or taken by an
  // earlier reader (agent/ring.h, "Cancelled pairs").
  auto kind = ring::Kind::kFree;
  if (alloc) {
    const int64_t k = t.in->Range(0, 7);
    kind = k == 6 ? ring::Kind::kCancelled : k == 7 ? ring::Kind::kTaken : ring::Kind::kAlloc;
  }
  auto api = alloc ? static_cast<ring::Api>(t.in->Range(0, 10)) : ring::Api::kFree;
  words[head & mask] = ring::WithLap(ring::EncodeHeader(kind, api, nframes, nwords), head, t.lane_words);
  d.head.store(head + nwords, std::memory_order_release);
  if (lane == 0) t.h->counter.store(key + 1, std::memory_order_relaxed);
}

// What the target writes in the middle of a round.
void MidRound(uint32_t, void* arg) {
  Target& t = *static_cast<Target*>(arg);
  if (t.in->Next<uint8_t>() % 4 == 0) *Word(t, t.in->Next<uint32_t>()) = t.in->Next<uint64_t>();
}

void CheckRecord(const Target& t, const client::RingRecord& rec) {
  FUZZ_CHECK(rec.nframes >= 0 && rec.nframes <= ring::kMaxFrames, "a record with too many frames");
  FUZZ_CHECK(rec.lane < t.lanes, "a record from a lane that does not exist");
  FUZZ_CHECK(rec.kind != ring::Kind::kCancelled && rec.kind != ring::Kind::kTaken,
             "a cancelled or taken record's own kind handed out");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  Target t{};
  t.in = &in;
  t.lanes = static_cast<uint32_t>(in.Range(1, 4));
  t.lane_words = uint64_t{64} << in.Range(0, 2);
  const size_t bytes = ring::RingFileBytes(t.lanes, t.lane_words);
  t.words_total = bytes / 8;
  void* mem = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  std::memset(mem, 0, bytes);
  t.h = static_cast<ring::RingHeader*>(mem);
  t.next_key.assign(t.lanes, 1);
  ring::RingHeader* h = t.h;
  h->version = ring::kVersion;
  h->header_bytes = ring::kHeaderBytes;
  h->lane_words = t.lane_words;
  h->lane_count = t.lanes;
  constexpr ring::Clock kClocks[] = {ring::Clock::kTsc, ring::Clock::kCounter, ring::Clock::kStripes};
  h->clock = static_cast<uint32_t>(kClocks[in.Range(0, 2)]);
  h->lanes_used.store(static_cast<uint32_t>(in.Range(0, t.lanes + 2)));
  h->pid = in.Next<int32_t>();
  h->sample_bytes = in.Next<uint8_t>() < 32 ? 0 : in.Next<uint32_t>();
  h->cmdline_len = in.Next<uint32_t>();  // may claim more than the array holds
  std::string s = in.Bytes(sizeof h->exe);
  std::memcpy(h->exe, s.data(), s.size());  // possibly without a NUL
  s = in.Bytes(sizeof h->service);
  std::memcpy(h->service, s.data(), s.size());
  h->maps_len = in.Next<uint32_t>();
  h->maps_seq.store(in.Next<uint8_t>() % 3);
  h->magic = ring::kMagic;
  for (uint32_t lane = 0; lane < t.lanes; ++lane) {
    for (size_t n = in.Range(0, 6); n > 0; --n) AppendRecord(t, lane);
  }

  client::RingReader reader;
  FUZZ_CHECK(reader.Attach(h, bytes), "a well-formed ring header was refused");
  reader.SetRoundHookForTest(MidRound, &t);
  bool read_any = false;
  client::RingRecord rec;
  for (int op = 0; op < 96 && !in.empty(); ++op) {
    switch (in.Next<uint8_t>() % 12) {
      case 0: case 1: case 2: case 3:
        for (int i = 0; i < 16 && reader.Next(&rec); ++i) {
          CheckRecord(t, rec);
          read_any = true;
        }
        break;
      case 4:
        reader.Release();
        break;
      case 5:  // any word of the mapping: header, lane descriptors, records
        *Word(t, in.Next<uint32_t>()) = in.Next<uint64_t>();
        break;
      case 6:
        AppendRecord(t, static_cast<uint32_t>(in.Range(0, t.lanes - 1)));
        break;
      case 7: {  // positions from the server: any values
        std::vector<uint64_t> pos(in.Range(0, t.lanes + 1));
        for (uint64_t& p : pos) p = in.Bool() ? in.Next<uint16_t>() : in.Next<uint64_t>();
        if (!read_any) {
          reader.ResumeAt(pos);
        } else {
          reader.ReleaseTo(pos);
        }
        break;
      }
      case 8: {
        std::vector<uint64_t> pos = reader.Positions();
        FUZZ_CHECK(pos.size() <= t.lanes, "a position for a lane that does not exist");
        reader.ReleaseTo(pos);
        break;
      }
      case 9:
        (void)reader.Maps();
        (void)reader.ClaimProcessId(in.Next<uint64_t>() | 1);
        (void)reader.ClaimStreamKey(in.Next<uint64_t>() | 1);
        break;
      case 10:
        (void)reader.Uncommitted();
        (void)reader.MaxUnreleased();
        (void)reader.dropped_events();
        (void)reader.unwind_failures();
        (void)reader.damage();
        break;
      default:
        reader.WritersGone();
        break;
    }
  }
  for (int i = 0; i < 64 && reader.Next(&rec); ++i) CheckRecord(t, rec);
  reader.Release();
  std::free(mem);
  return 0;
}
