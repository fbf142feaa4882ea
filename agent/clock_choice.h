// Which clock orders an agent's records (agent/ring.h, "Order across
// lanes"). By default none: per-thread clocks that meet at address stripes
// (Clock::kStripes), which needs CMPXCHG16B (CPUID 1 ECX bit 13; every
// x86-64 CPU since 2006 has it) for the shared lane. CGOHEAP_CLOCK=tsc or
// counter asks for one of the older ways (benchmarks compare them), and a
// CPU without CMPXCHG16B gets one of them:
//
// The TSC orders events across CPUs only if it is invariant (CPUID
// 0x80000007 EDX bit 8: constant rate, ticking through sleep states) and
// synchronized between CPUs. The kernel checks the latter at boot and keeps
// watching; a TSC that fails is marked unstable and withdrawn as a
// clocksource. So the TSC is used when it is the kernel's clocksource, or
// when the kernel still offers it (available_clocksource lists "tsc": most
// cloud VMs keep time with kvm-clock but list tsc as well) and the CPU says
// it is invariant; and only where the CPU has RDTSCP (CPUID 0x80000001 EDX
// bit 27), which the keys are read with. Otherwise a shared counter: one
// atomic add on one cache line per event, shared by every thread.
// docs/ARCHITECTURE.md, "Trust boundaries" and the ordering fact.
//
// Allocation-free (the agent runs it in a constructor).
#pragma once

#include <cstring>

#include "agent/ring.h"

namespace cgoheap::agent {

struct ClockFacts {
  const char* forced = nullptr;     // $CGOHEAP_CLOCK: "tsc", "counter" or "stripes"
  bool cx16 = false;                // CPUID 1 ECX bit 13 (CMPXCHG16B)
  bool rdtscp = false;              // CPUID 0x80000001 EDX bit 27
  bool invariant_tsc = false;       // CPUID 0x80000007 EDX bit 8
  const char* current = "";         // /sys/.../clocksource0/current_clocksource
  const char* available = "";       // /sys/.../clocksource0/available_clocksource
};

// Whether the whitespace-separated list holds word.
inline bool HasWord(const char* list, const char* word) {
  const size_t n = strlen(word);
  for (const char* p = list; *p != '\0';) {
    while (*p == ' ' || *p == '\n' || *p == '\t') ++p;
    const char* start = p;
    while (*p != '\0' && *p != ' ' && *p != '\n' && *p != '\t') ++p;
    if (static_cast<size_t>(p - start) == n && strncmp(start, word, n) == 0) return true;
  }
  return false;
}

inline ring::Clock DecideClock(const ClockFacts& f) {
  const bool asked_tsc = f.forced != nullptr && strcmp(f.forced, "tsc") == 0;
  if (f.forced != nullptr && strcmp(f.forced, "counter") == 0) return ring::Clock::kCounter;
  if (f.cx16 && !asked_tsc) return ring::Clock::kStripes;
  if (!f.rdtscp) return ring::Clock::kCounter;
  if (HasWord(f.current, "tsc")) return ring::Clock::kTsc;
  if (f.invariant_tsc && HasWord(f.available, "tsc")) return ring::Clock::kTsc;
  return ring::Clock::kCounter;
}

}  // namespace cgoheap::agent
