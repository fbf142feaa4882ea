#include "agent/go_crossing.h"

#include <gtest/gtest.h>

#include <vector>

namespace cgoheap::agent {
namespace {

// asmcgocall.abi0 as Go 1.19 assembles it (go tool objdump): no frame of its
// own, g at 0x30(SP), depth at 0x28(SP), C entered with CALL AX; the
// system-stack path keeps the original SP at 0x28(SP).
const std::vector<uint8_t> kGo119 = {
    0x48, 0x8b, 0x44, 0x24, 0x08,                    // MOVQ 0x8(SP), AX
    0xe8, 0x2a, 0xf0, 0xff, 0xff,                    // CALL gosave_systemstack_switch
    0x64, 0x48, 0x89, 0x34, 0x25, 0xf8, 0xff, 0xff, 0xff,  // MOVQ SI, FS:-8
    0x48, 0x83, 0xec, 0x40,                          // SUBQ $0x40, SP
    0x48, 0x89, 0x7c, 0x24, 0x30,                    // MOVQ DI, 0x30(SP)
    0xff, 0xd0,                                      // CALL AX
    0x48, 0x8b, 0x7c, 0x24, 0x30,                    // MOVQ 0x30(SP), DI   <- return site
    0x48, 0x8b, 0x77, 0x08,                          // MOVQ 0x8(DI), SI
    0x48, 0x2b, 0x74, 0x24, 0x28,                    // SUBQ 0x28(SP), SI
    0x48, 0x89, 0xf4,                                // MOVQ SI, SP
    0xc3,                                            // RET
    0x48, 0xc7, 0x44, 0x24, 0x30, 0, 0, 0, 0,        // MOVQ $0, 0x30(SP)
    0xff, 0xd0,                                      // CALL AX
    0x48, 0x8b, 0x74, 0x24, 0x28,                    // MOVQ 0x28(SP), SI   <- system stack
    0x48, 0x89, 0xf4,                                // MOVQ SI, SP
    0xc3,
};

// Go 1.22 and later: PUSHQ BP; MOVQ SP, BP first, g at 8(SP), depth at
// 0(SP), C entered through CALL asmcgocall_landingpad.
const std::vector<uint8_t> kGo122 = {
    0x55,                                            // PUSHQ BP
    0x48, 0x89, 0xe5,                                // MOVQ SP, BP
    0xe8, 0xa6, 0xef, 0xff, 0xff,                    // CALL gosave_systemstack_switch
    0x48, 0x83, 0xec, 0x10,                          // SUBQ $0x10, SP
    0x48, 0x89, 0x7c, 0x24, 0x08,                    // MOVQ DI, 0x8(SP)
    0x48, 0x89, 0x3c, 0x24,                          // MOVQ DI, 0(SP)
    0xe8, 0x7c, 0xff, 0xff, 0xff,                    // CALL asmcgocall_landingpad
    0x48, 0x8b, 0x7c, 0x24, 0x08,                    // MOVQ 0x8(SP), DI    <- return site
    0x48, 0x8b, 0x77, 0x08,                          // MOVQ 0x8(DI), SI
    0x48, 0x2b, 0x34, 0x24,                          // SUBQ 0(SP), SI
    0x5d, 0xc3,                                      // POPQ BP; RET
    0xe8, 0x43, 0xff, 0xff, 0xff,                    // CALL asmcgocall_landingpad
    0x48, 0x8b, 0x34, 0x24,                          // MOVQ 0(SP), SI      <- system stack
    0x48, 0x89, 0xf4,                                // MOVQ SI, SP
    0x5d, 0xc3,
};

TEST(GoCrossingTest, Go119LayoutIsReadFromTheCode) {
  GoCrossing c;
  ASSERT_TRUE(DecodeAsmcgocall(kGo119.data(), kGo119.size(), 0x1000, &c));
  EXPECT_FALSE(c.pushes_frame);
  ASSERT_EQ(c.nsites, 2);
  const GoCrossing::Site* g = c.Find(0x1000 + 30);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->kind, GoCrossing::Kind::kGoroutine);
  EXPECT_EQ(g->g_off, 0x30);
  EXPECT_EQ(g->depth_off, 0x28);
  const GoCrossing::Site* sys = c.Find(0x1000 + 59);
  ASSERT_NE(sys, nullptr);
  EXPECT_EQ(sys->kind, GoCrossing::Kind::kSystemStack);
  EXPECT_EQ(sys->sp_off, 0x28);
  EXPECT_EQ(c.Find(0x1000 + 31), nullptr);
}

TEST(GoCrossingTest, Go122LayoutIsReadFromTheCode) {
  GoCrossing c;
  ASSERT_TRUE(DecodeAsmcgocall(kGo122.data(), kGo122.size(), 0x2000, &c));
  EXPECT_TRUE(c.pushes_frame);
  ASSERT_EQ(c.nsites, 2);
  EXPECT_EQ(c.sites[0].return_pc, 0x2000u + 27);
  EXPECT_EQ(c.sites[0].kind, GoCrossing::Kind::kGoroutine);
  EXPECT_EQ(c.sites[0].g_off, 8);
  EXPECT_EQ(c.sites[0].depth_off, 0);
  EXPECT_EQ(c.sites[1].kind, GoCrossing::Kind::kSystemStack);
  EXPECT_EQ(c.sites[1].sp_off, 0);
}

// A layout the decoder does not know is reported as unknown, never guessed:
// here g is reloaded into another register, and elsewhere stack.hi is read
// at another offset of g.
TEST(GoCrossingTest, UnknownLayoutsAreNotGuessed) {
  std::vector<uint8_t> other_register = kGo122;
  other_register[28] = 0x8b;  // MOVQ 0x8(SP), DI -> ...
  other_register[29] = 0x5c;  // MOVQ 0x8(SP), BX
  GoCrossing c;
  EXPECT_FALSE(DecodeAsmcgocall(other_register.data(), other_register.size(), 0, &c));
  EXPECT_FALSE(c.known());
  EXPECT_EQ(c.Find(27), nullptr);

  std::vector<uint8_t> other_g = kGo122;
  other_g[35] = 0x10;  // MOVQ 0x10(DI), SI: g->stack is not {lo, hi} at 0
  EXPECT_FALSE(DecodeAsmcgocall(other_g.data(), other_g.size(), 0, &c));

  // Cut anywhere inside the restore sequence: nothing is read past the end.
  for (size_t n = 0; n < 40; ++n) {
    EXPECT_FALSE(DecodeAsmcgocall(kGo122.data(), n, 0, &c)) << n;
  }
  EXPECT_FALSE(DecodeAsmcgocall(nullptr, 0, 0, &c));
}

}  // namespace
}  // namespace cgoheap::agent
