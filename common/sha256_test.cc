#include "common/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace cgoheap {
namespace {

std::string Hex(std::string_view data, size_t chunk = 0) {
  Sha256 h;
  if (chunk == 0) {
    h.Update(data);
  } else {
    for (size_t i = 0; i < data.size(); i += chunk) h.Update(data.substr(i, chunk));
  }
  std::string out;
  for (uint8_t b : h.Final()) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

// The test vectors of FIPS 180-4's examples (NIST CSRC).
TEST(Sha256Test, KnownAnswers) {
  EXPECT_EQ(Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(Hex(two_blocks), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Hex(two_blocks, 7), Hex(two_blocks));  // however the input is split
  EXPECT_EQ(Hex(std::string(1000000, 'a'), 4096),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace
}  // namespace cgoheap
