#include "agent/go_crossing.h"

namespace cgoheap::agent {
namespace {

// MOVQ disp(SP), reg or SUBQ disp(SP), reg with reg in the ModRM reg field:
// REX.W op, then ModRM 0x44|reg<<3 + SIB 0x24 + disp8, or ModRM 0x04|reg<<3
// + SIB 0x24 (disp 0). Returns the instruction's length, 0 if no match.
size_t MatchSpOperand(const uint8_t* p, const uint8_t* end, uint8_t op, uint8_t reg,
                      uint8_t* disp) {
  if (end - p < 4 || p[0] != 0x48 || p[1] != op || p[3] != 0x24) return 0;
  if (p[2] == (0x04 | reg << 3)) {
    *disp = 0;
    return 4;
  }
  if (p[2] == (0x44 | reg << 3) && end - p >= 5 && p[4] < 0x80) {
    *disp = p[4];
    return 5;
  }
  return 0;
}

constexpr uint8_t kMovLoad = 0x8B, kSub = 0x2B;
constexpr uint8_t kRsi = 6, kRdi = 7;

// True when the bytes just before p end a CALL: E8 rel32, or FF D0 (CALL AX).
bool AfterCall(const uint8_t* code, const uint8_t* p) {
  return (p - code >= 5 && p[-5] == 0xE8) || (p - code >= 2 && p[-2] == 0xFF && p[-1] == 0xD0);
}

}  // namespace

bool DecodeAsmcgocall(const uint8_t* code, size_t size, uint64_t entry, GoCrossing* out) {
  *out = GoCrossing{};
  const uint8_t* end = code + size;
  out->pushes_frame = size >= 4 && code[0] == 0x55 && code[1] == 0x48 && code[2] == 0x89 &&
                      code[3] == 0xE5;
  bool goroutine_site = false;
  for (const uint8_t* p = code; p < end && out->nsites < GoCrossing::kMaxSites; ++p) {
    if (!AfterCall(code, p)) continue;
    GoCrossing::Site site;
    site.return_pc = entry + static_cast<uint64_t>(p - code);
    uint8_t g_off, depth_off, sp_off;
    if (size_t n = MatchSpOperand(p, end, kMovLoad, kRdi, &g_off); n != 0) {
      // MOVQ stack_hi(DI), SI: 48 8B 77 disp8
      const uint8_t* q = p + n;
      // g->stack is g's first field, {lo, hi}: stack.hi at 8. The walk
      // reads both words, so any other layout is not one it understands.
      if (end - q < 4 || q[0] != 0x48 || q[1] != 0x8B || q[2] != 0x77 || q[3] != 8) continue;
      if (MatchSpOperand(q + 4, end, kSub, kRsi, &depth_off) == 0) continue;
      site.kind = GoCrossing::Kind::kGoroutine;
      site.g_off = g_off;
      site.depth_off = depth_off;
      goroutine_site = true;
    } else if (size_t m = MatchSpOperand(p, end, kMovLoad, kRsi, &sp_off); m != 0) {
      const uint8_t* q = p + m;  // MOVQ SI, SP: 48 89 F4
      if (end - q < 3 || q[0] != 0x48 || q[1] != 0x89 || q[2] != 0xF4) continue;
      site.kind = GoCrossing::Kind::kSystemStack;
      site.sp_off = sp_off;
    } else {
      continue;
    }
    out->sites[out->nsites++] = site;
  }
  if (!goroutine_site) {
    out->nsites = 0;
    return false;
  }
  return true;
}

}  // namespace cgoheap::agent
