// Microbenchmarks of the agent's hook paths and unwinders.
//
//   build/bin/agent_benchmark --benchmark_min_time=0.2
//
// BM_FastPath*: what every malloc/free pays before any recording.
// BM_Capture*: one stack capture through C frames without frame pointers,
//   with the cached CFI unwinder, with the per-thread chain cache (as the
//   hooks capture), and with libunwind (the fallback).
// BM_SampledPair: a malloc/free pair in sampled mode at 524288 bytes.
// BM_RecordExact: capture + ring write of one allocation event, with a
//   reader thread draining the ring as the forwarder would.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "agent/agent.h"
#include "agent/sampled_set.h"
#include "agent/sampler.h"
#include "client/ring_reader.h"

extern "C" int cgoheap_capture_stack_libunwind(uint64_t* pcs, int max);

namespace cgoheap::agent {
namespace {

void BM_FastPathUnsampledAlloc(benchmark::State& state) {
  size_t size = 64;
  for (auto _ : state) {
    bool s = SampleAllocation(size, 524288);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_FastPathUnsampledAlloc);

void BM_FastPathUnsampledFree(benchmark::State& state) {
  static SampledSet set;
  if (!set.ready()) set.Init(1 << 15);
  for (uint64_t i = 0; i < 2000; ++i) set.Insert(0x7f0000000000 + i * 4096);
  uint64_t addr = 0x5555000000;
  for (auto _ : state) {
    addr += 48;
    bool maybe = set.MaybeContains(addr);
    benchmark::DoNotOptimize(maybe);
  }
}
BENCHMARK(BM_FastPathUnsampledFree);

template <int N>
__attribute__((noinline, optimize("omit-frame-pointer"))) int Deep(bool libunwind,
                                                                   uint64_t* pcs) {
  volatile char pad[N * 16 + 8];
  pad[0] = 0;
  int r;
  if constexpr (N == 0) {
    r = libunwind ? cgoheap_capture_stack_libunwind(pcs, 64) : cgoheap_capture_stack(pcs, 64);
  } else {
    r = Deep<N - 1>(libunwind, pcs);
  }
  asm volatile("" ::"r"(pad) : "memory");
  return r;
}

void BM_CaptureCachedCfi(benchmark::State& state) {
  uint64_t pcs[64];
  for (auto _ : state) benchmark::DoNotOptimize(Deep<8>(false, pcs));
  state.counters["frames"] = Deep<8>(false, pcs);
}
BENCHMARK(BM_CaptureCachedCfi);

// As from the preload shim: from a frame pointer, served by the thread's
// chain cache after the first capture (the slots are re-read and compared).
template <int N>
__attribute__((noinline, optimize("omit-frame-pointer"))) int DeepShim(uint64_t* pcs);
__attribute__((noinline, optimize("no-omit-frame-pointer"))) int ShimCapture(uint64_t* pcs) {
  int n = cgoheap_capture_stack(pcs, 64, __builtin_frame_address(0));
  asm volatile("" ::: "memory");
  return n;
}
template <int N>
__attribute__((noinline, optimize("omit-frame-pointer"))) int DeepShim(uint64_t* pcs) {
  volatile char pad[N * 16 + 8];
  pad[0] = 0;
  int r;
  if constexpr (N == 0) {
    r = ShimCapture(pcs);
  } else {
    r = DeepShim<N - 1>(pcs);
  }
  asm volatile("" ::"r"(pad) : "memory");
  return r;
}

void BM_CaptureChainCache(benchmark::State& state) {
  uint64_t pcs[64];
  for (auto _ : state) benchmark::DoNotOptimize(DeepShim<8>(pcs));
  state.counters["frames"] = DeepShim<8>(pcs);
}
BENCHMARK(BM_CaptureChainCache);

void BM_CaptureLibunwind(benchmark::State& state) {
  uint64_t pcs[64];
  for (auto _ : state) benchmark::DoNotOptimize(Deep<8>(true, pcs));
  state.counters["frames"] = Deep<8>(true, pcs);
}
BENCHMARK(BM_CaptureLibunwind);

// Sampled mode at the production rate, per malloc/free pair of 64 bytes:
// the countdown, and for the sampled ones (1 in ~8,000) the capture and the
// sampled set; every free probes the filter. (Recording the sample into the
// ring is BM_RecordExact's cost, paid once per sample.)
void BM_SampledPair(benchmark::State& state) {
  static SampledSet set;
  if (!set.ready()) set.Init(1 << 16);
  uint64_t pcs[64];
  uint64_t addr = 0x5555000000, samples = 0;
  for (auto _ : state) {
    addr += 64;
    if (SampleAllocation(64, 524288)) {
      benchmark::DoNotOptimize(DeepShim<2>(pcs));
      set.Insert(addr);
      ++samples;
    }
    if (set.MaybeContains(addr)) set.Erase(addr);
  }
  state.counters["sampled"] = static_cast<double>(samples);
}
BENCHMARK(BM_SampledPair);

void BM_RecordExact(benchmark::State& state) {
  static bool started = [] {
    std::string dir = std::filesystem::temp_directory_path() / "cgoheap-agent-bench";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    setenv("CGOHEAP_RING_DIR", dir.c_str(), 1);
    setenv("CGOHEAP_ROOT_PID", "0", 1);
    Initialize();
    return cgoheap_active();
  }();
  if (!started) {
    state.SkipWithError("agent did not start");
    return;
  }
  std::string dir = getenv("CGOHEAP_RING_DIR");
  std::string path;
  for (const auto& e : std::filesystem::directory_iterator(dir)) path = e.path();
  client::RingReader reader;
  if (!reader.Open(path)) {
    state.SkipWithError("cannot open the ring");
    return;
  }
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    client::RingRecord rec;
    while (!stop.load(std::memory_order_relaxed)) {
      while (reader.Next(&rec)) {
      }
      reader.Release();
    }
  });
  char block[64];
  for (auto _ : state) cgoheap_on_alloc(0, block, sizeof block, nullptr);
  stop = true;
  drain.join();
}
BENCHMARK(BM_RecordExact);

}  // namespace
}  // namespace cgoheap::agent

BENCHMARK_MAIN();
