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

// crosscall2 as Go 1.19-1.21 and 1.22+ assemble it (go tool objdump), up to its
// CALL runtime.cgocallback.abi0 (at 0x9000 here).
std::vector<uint8_t> Crosscall2(bool push_bp) {
  std::vector<uint8_t> code;
  if (push_bp) code.insert(code.end(), {0x55, 0x48, 0x89, 0xe5});  // PUSHQ BP; MOVQ SP, BP
  code.insert(code.end(), {
      0x48, 0x83, 0xec, 0x30,        // SUBQ $0x30, SP
      0x48, 0x89, 0x6c, 0x24, 0x28,  // MOVQ BP, 0x28(SP)
      0x48, 0x8d, 0x6c, 0x24, 0x28,  // LEAQ 0x28(SP), BP
      0x48, 0x89, 0x1c, 0x24,        // MOVQ BX, 0(SP)
      0x4c, 0x89, 0x64, 0x24, 0x08,  // MOVQ R12, 0x8(SP)
      0x4c, 0x89, 0x6c, 0x24, 0x10,  // MOVQ R13, 0x10(SP)
      0x4c, 0x89, 0x74, 0x24, 0x18,  // MOVQ R14, 0x18(SP)
      0x4c, 0x89, 0x7c, 0x24, 0x20,  // MOVQ R15, 0x20(SP)
      0x48, 0x83, 0xec, 0x18,        // SUBQ $0x18, SP
      0x48, 0x89, 0x3c, 0x24,        // MOVQ DI, 0(SP)
      0x48, 0x89, 0x74, 0x24, 0x08,  // MOVQ SI, 0x8(SP)
      0x48, 0x89, 0x4c, 0x24, 0x10,  // MOVQ CX, 0x10(SP)
  });
  // CALL rel32 to 0x9000 from entry 0x8000.
  uint64_t ret = 0x8000 + code.size() + 5;
  int32_t rel = static_cast<int32_t>(0x9000 - static_cast<int64_t>(ret));
  code.push_back(0xe8);
  for (int i = 0; i < 4; ++i) code.push_back(static_cast<uint8_t>(rel >> (8 * i)));
  code.insert(code.end(), {0x48, 0x83, 0xc4, 0x18, 0xc3});  // ADDQ $0x18, SP; RET
  return code;
}

TEST(GoCrossingTest, Crosscall2FrameIsReadFromTheCode) {
  for (bool push_bp : {false, true}) {
    std::vector<uint8_t> code = Crosscall2(push_bp);
    CallbackCrossing x;
    ASSERT_TRUE(DecodeCrosscall2(code.data(), code.size(), 0x8000, 0x9000, 0x9100, &x)) << push_bp;
    EXPECT_EQ(x.return_pc, 0x8000u + code.size() - 5);
    // Below the return address: 0x30 + 0x18 (+ 8 for the pushed RBP).
    EXPECT_EQ(x.cfa_off, (push_bp ? 0x50u : 0x48u) + 8);
    // The caller's RBP: pushed first (1.21+), or stored at 0x28 of 0x30.
    EXPECT_EQ(x.rbp_off, 16u);
  }
}

TEST(GoCrossingTest, Crosscall2OfAnotherShapeIsNotGuessed) {
  std::vector<uint8_t> code = Crosscall2(true);
  CallbackCrossing x;
  // A call of something other than cgocallback.
  EXPECT_FALSE(DecodeCrosscall2(code.data(), code.size(), 0x8000, 0xa000, 0xa100, &x));
  // An instruction the decoder does not know before the call.
  std::vector<uint8_t> other = code;
  other[4] = 0x90;  // NOP where SUBQ begins
  EXPECT_FALSE(DecodeCrosscall2(other.data(), other.size(), 0x8000, 0x9000, 0x9100, &x));
  EXPECT_FALSE(x.known());
  // Cut before the call.
  EXPECT_FALSE(DecodeCrosscall2(code.data(), code.size() - 8, 0x8000, 0x9000, 0x9100, &x));
}

}  // namespace
}  // namespace cgoheap::agent
