// The weight of one sample of Poisson sampling by bytes (see agent/sampler.h):
// an allocation of `size` bytes is sampled with probability 1 - exp(-size/rate),
// so it stands for 1/p allocations and size/p bytes. rate 0: exact mode.
#pragma once

#include <cmath>
#include <cstdint>

namespace cgoheap {

inline double SampleWeight(uint64_t size, uint64_t rate) {
  if (rate == 0) return 1.0;
  double p = -std::expm1(-static_cast<double>(size) / static_cast<double>(rate));
  return p > 0 ? 1.0 / p : 1.0;
}

}  // namespace cgoheap
