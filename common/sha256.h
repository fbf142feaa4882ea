// SHA-256 (FIPS 180-4), for identifiers that a stranger must not be able to
// forge: stack ids are derived from a stack's frames with it, so a client
// cannot define a stack that takes another stack's id.
//
//   Sha256 h;
//   h.Update("abc");
//   std::array<uint8_t, 32> digest = h.Final();
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cgoheap {

class Sha256 {
 public:
  Sha256();
  void Update(std::string_view data);
  std::array<uint8_t, 32> Final();

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed
};

}  // namespace cgoheap
