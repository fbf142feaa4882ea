// SHA-256 (FIPS 180-4), for identifiers that a stranger must not be able to
// forge: stack ids are derived from a stack's frames with it, so a client
// cannot define a stack that takes another stack's id.
//
// OpenSSL's (EVP): it uses the CPU's SHA extensions where there are some,
// five to seven times as fast as portable code (1 GB/s against 150-200 MB/s
// here). Every new stack is hashed twice, by the forwarder and again by
// cgoheapd, and a C++ library's stacks run to kilobytes of names.
//
//   Sha256 h;
//   h.Update("abc");
//   std::array<uint8_t, 32> digest = h.Final();
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

struct evp_md_ctx_st;

namespace cgoheap {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  // Readies OpenSSL's SHA-256 now (its first use loads OpenSSL's provider:
  // about 1.5 ms), from a thread that has the time. Thread-safe.
  static void Prepare();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  // Once: the object is spent after it.
  std::array<uint8_t, 32> Final();

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace cgoheap
