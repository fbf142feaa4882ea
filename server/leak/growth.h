// Growth leaks: whether one stack's live memory, sampled over time, is
// leaking. The detector alone; HeapState (server/ingest/) keeps the samples.
//
// Over the last window, in four equal time buckets, the floor (minimum) of a
// leaking stack's live bytes rises in every bucket: what leaks never comes
// back, whatever churns around it. Churn keeps the floor flat; a cache that
// fills once, or a start-up allocation, rises and then stays flat. The rise
// must also exceed half the churn seen in the first bucket, so that the
// floors of a noisy but flat stack do not pass by chance.
//
//   GrowthVerdict v = JudgeGrowth(samples, now, window_nanos);
//   if (v.grows) ... v.rate_per_hour, v.since ...
#pragma once

#include <cstdint>
#include <vector>

namespace cgoheap::server {

struct GrowthSample {
  int64_t t;     // Unix nanoseconds
  double bytes;  // live bytes of the stack then (estimated when sampled)
  double blocks = 0;  // and live blocks (not judged: kept for profiles of the past)
};

struct GrowthVerdict {
  bool grows = false;
  double rate_per_hour = 0;  // bytes per hour, over the window
  int64_t since = 0;         // when the rise began (the window's start, or the first sample)
};

// samples: oldest first, the oldest at or before now - window (else the
// window is not covered yet and nothing grows).
GrowthVerdict JudgeGrowth(const std::vector<GrowthSample>& samples, int64_t now, int64_t window);

// Samples are taken this often (a sixteenth of the window).
inline int64_t GrowthResolution(int64_t window) { return window / 16 > 1 ? window / 16 : 1; }

}  // namespace cgoheap::server
