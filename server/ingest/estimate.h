// An unbiased estimate of bytes or blocks (sums of size x 1/p, see
// common/sampling.h), kept in 128-bit fixed point with 20 fraction bits.
//
// Sums of doubles depend on the order of their terms, and the live heap
// rebuilt after a restart (from a snapshot, in hash order) adds its blocks in
// another order than they arrived: in doubles, the figures a client saw could
// change across a restart, and a block added and removed could leave a
// residue. In fixed point every sum is exact, so the same blocks give the
// same figures in any order, and exact mode (weight 1) stays integer-exact
// at any size. A term is at most about size + rate (< 2^65) x 2^20: room for
// 2^42 of them.
//
//   Estimate est;
//   est += Estimate::Term(size, SampleWeight(size, rate));
//   uint64_t shown = est.Rounded();
#pragma once

#include <cmath>
#include <compare>
#include <cstdint>

namespace cgoheap::server {

class Estimate {
 public:
  static constexpr int kFractionBits = 20;
  Estimate() = default;

  // size x weight, for a weight >= 1 (exactly size << 20 for weight 1).
  static Estimate Term(uint64_t size, double weight) {
    if (weight == 1.0) return Estimate(static_cast<Raw>(size) << kFractionBits);
    return Of(static_cast<double>(size) * weight);
  }
  // A finite value >= 0 (anything else counts as 0).
  static Estimate Of(double x) {
    if (!(x > 0) || !std::isfinite(x)) return Estimate(0);
    double scaled = std::ldexp(x, kFractionBits);
    if (scaled >= 0x1p127) return Estimate(Raw{1} << 127);
    return Estimate(static_cast<Raw>(scaled));
  }

  Estimate& operator+=(Estimate o) {
    v_ += o.v_;
    return *this;
  }
  // Only what was added before (never below zero).
  Estimate& operator-=(Estimate o) {
    v_ = v_ >= o.v_ ? v_ - o.v_ : 0;
    return *this;
  }
  auto operator<=>(const Estimate&) const = default;

  double ToDouble() const { return std::ldexp(static_cast<double>(v_), -kFractionBits); }
  // The nearest integer, at most 2^64 - 1.
  uint64_t Rounded() const {
    Raw whole = (v_ + (Raw{1} << (kFractionBits - 1))) >> kFractionBits;
    return whole > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(whole);
  }

 private:
  using Raw = unsigned __int128;
  explicit Estimate(Raw v) : v_(v) {}
  Raw v_ = 0;
};

}  // namespace cgoheap::server
