// Reads a fuzzer's input as a sequence of small decisions: integers, choices
// and strings, each taken from the front; past the end everything reads as
// zero, so any input, even an empty one, is a complete run.
//
//   FuzzInput in(data, size);
//   uint32_t lanes = 1 + in.Next<uint8_t>() % 4;
//   while (!in.empty()) switch (in.Next<uint8_t>() % 3) { ... }
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

// A property of the code under test: when it does not hold, says which and
// aborts (libFuzzer and the replay driver keep the input).
#define FUZZ_CHECK(cond, what)                                                        \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s (%s)\n", __FILE__, __LINE__, what, #cond);      \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

namespace cgoheap::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return empty() ? 0 : size_ - pos_; }

  template <typename T>
  T Next() {
    static_assert(std::is_trivially_copyable_v<T>);
    unsigned char bytes[sizeof(T)] = {};
    size_t n = remaining() < sizeof(T) ? remaining() : sizeof(T);
    if (n > 0) std::memcpy(bytes, data_ + pos_, n);
    pos_ += n;
    T v;
    std::memcpy(&v, bytes, sizeof(T));
    return v;
  }
  // In [lo, hi] (hi >= lo).
  uint64_t Range(uint64_t lo, uint64_t hi) {
    uint64_t span = hi - lo;
    uint64_t v = span < 0xff ? Next<uint8_t>() : span < 0xffff ? Next<uint16_t>() : Next<uint64_t>();
    return span == ~uint64_t{0} ? v : lo + v % (span + 1);
  }
  bool Bool() { return Next<uint8_t>() & 1; }
  // A string of up to max_len bytes, its length read first.
  std::string Bytes(size_t max_len) {
    size_t n = Range(0, max_len);
    n = n < remaining() ? n : remaining();
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  // Everything not read yet.
  std::string Rest() {
    std::string s = empty() ? std::string() : std::string(reinterpret_cast<const char*>(data_ + pos_), size_ - pos_);
    pos_ = size_;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace cgoheap::fuzz
