#include "common/escape.h"

#include <gtest/gtest.h>

#include <random>

namespace cgoheap {
namespace {

TEST(EscapeTest, Utf8ValidationFollowsProtobufsRules) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(IsValidUtf8("caf\xe9"));              // Latin-1
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));             // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));         // overlong, 3 bytes
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));         // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));     // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));             // cut short
  EXPECT_FALSE(IsValidUtf8("\x80"));                 // a lone continuation byte
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));  // NUL is valid UTF-8
}

TEST(EscapeTest, WireStringLeavesTextAloneAndEscapesBytes) {
  EXPECT_EQ(WireString("/usr/bin/prog"), "/usr/bin/prog");
  EXPECT_EQ(WireString("caf\xc3\xa9.txt"), "caf\xc3\xa9.txt");
  EXPECT_EQ(WireString("caf\xe9.txt"), "caf\\xe9.txt");
  EXPECT_EQ(WireString("a\\b"), "a\\b");         // a backslash alone is text
  EXPECT_EQ(WireString("\\x41"), "\\x5cx41");    // but \x would be read as an escape
  EXPECT_EQ(WireString("end\\"), "end\\");
  EXPECT_EQ(WireString("\xff\xfe"), "\\xff\\xfe");
}

TEST(EscapeTest, WireStringIsValidUtf8AndLosslessForAnyBytes) {
  std::mt19937_64 rng(7);
  const std::string alphabet = std::string("\\x0aZ\xc3\xa9\xe9\xed\xa0\x80\xf0\x9f\x98\x80\xff", 16);
  for (int round = 0; round < 20000; ++round) {
    std::string s;
    size_t n = rng() % 12;
    for (size_t i = 0; i < n; ++i) {
      // Half the bytes from a hostile alphabet, half anything.
      s.push_back(rng() % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng()));
    }
    std::string wire = WireString(s);
    ASSERT_TRUE(IsValidUtf8(wire)) << testing::PrintToString(s);
    ASSERT_EQ(FromWireString(wire), s) << testing::PrintToString(s);
  }
}

TEST(EscapeTest, PrintableDisarmsTerminalControls) {
  EXPECT_EQ(Printable("plain caf\xc3\xa9"), "plain caf\xc3\xa9");
  EXPECT_EQ(Printable("\x1b]0;owned\x07\x1b[2J"), "\\x1b]0;owned\\x07\\x1b[2J");
  EXPECT_EQ(Printable("a\nb\tc\rd\x7f"), "a\\nb\\tc\\rd\\x7f");
  EXPECT_EQ(Printable("\xc2\x9b" "31m"), "\\u009b31m");  // C1 CSI
  EXPECT_EQ(Printable("evil\xe2\x80\xaetxt.exe"), "evil\\u202etxt.exe");  // RLO
  EXPECT_EQ(Printable("caf\xe9"), "caf\\xe9");
  EXPECT_EQ(Printable(std::string("a\0b", 3)), "a\\x00b");
}

}  // namespace
}  // namespace cgoheap
