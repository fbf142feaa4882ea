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

// get_tls(CX), which a position-independent build (-buildmode=pie) puts
// between the CALL and the reloads: an instruction that only loads RCX
// (MOVQ $imm32, CX; MOVQ rel32(IP), CX; MOVQ FS:imm32, CX). Its length, or 0.
size_t LoadsCx(const uint8_t* p, const uint8_t* end) {
  size_t left = static_cast<size_t>(end - p);
  if (left >= 7 && p[0] == 0x48 && p[1] == 0xC7 && p[2] == 0xC1) return 7;
  if (left >= 7 && p[0] == 0x48 && p[1] == 0x8B && p[2] == 0x0D) return 7;
  if (left >= 9 && p[0] == 0x64 && p[1] == 0x48 && p[2] == 0x8B && p[3] == 0x0C && p[4] == 0x25) {
    return 9;
  }
  return 0;
}

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
    const uint8_t* r = p + LoadsCx(p, end);  // the reloads
    if (size_t n = MatchSpOperand(r, end, kMovLoad, kRdi, &g_off); n != 0) {
      // MOVQ stack_hi(DI), SI: 48 8B 77 disp8
      const uint8_t* q = r + n;
      // g->stack is g's first field, {lo, hi}: stack.hi at 8. The walk
      // reads both words, so any other layout is not one it understands.
      if (end - q < 4 || q[0] != 0x48 || q[1] != 0x8B || q[2] != 0x77 || q[3] != 8) continue;
      if (MatchSpOperand(q + 4, end, kSub, kRsi, &depth_off) == 0) continue;
      site.kind = GoCrossing::Kind::kGoroutine;
      site.g_off = g_off;
      site.depth_off = depth_off;
      goroutine_site = true;
    } else if (size_t m = MatchSpOperand(r, end, kMovLoad, kRsi, &sp_off); m != 0) {
      const uint8_t* q = r + m;  // MOVQ SI, SP: 48 89 F4
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

bool DecodeCrosscall2(const uint8_t* code, size_t size, uint64_t entry, uint64_t callback_lo,
                      uint64_t callback_hi, CallbackCrossing* out) {
  *out = CallbackCrossing{};
  const uint8_t* p = code;
  const uint8_t* end = code + size;
  uint64_t depth = 0;      // bytes below the return address
  uint64_t rbp_depth = 0;  // where the caller's RBP went, as a depth
  while (p < end && depth < 4096) {
    size_t left = static_cast<size_t>(end - p);
    if (p[0] == 0x55) {  // PUSHQ BP
      depth += 8;
      if (rbp_depth == 0) rbp_depth = depth;
      p += 1;
    } else if (left >= 3 && p[0] == 0x48 && p[1] == 0x89 && p[2] == 0xE5) {  // MOVQ SP, BP
      p += 3;
    } else if (left >= 4 && p[0] == 0x48 && p[1] == 0x83 && p[2] == 0xEC) {  // SUBQ $imm8, SP
      if (p[3] >= 0x80) return false;
      depth += p[3];
      p += 4;
    } else if (left >= 7 && p[0] == 0x48 && p[1] == 0x81 && p[2] == 0xEC) {  // SUBQ $imm32, SP
      uint32_t imm = p[3] | p[4] << 8 | p[5] << 16 | uint32_t{p[6]} << 24;
      if (imm >= 4096) return false;
      depth += imm;
      p += 7;
    } else if (left >= 5 && p[0] == 0x48 && p[1] == 0x8D && p[2] == 0x6C && p[3] == 0x24) {
      p += 5;  // LEAQ disp8(SP), BP
    } else if (left >= 4 && (p[0] == 0x48 || p[0] == 0x4C) && p[1] == 0x89 && (p[2] & 7) == 4 &&
               p[3] == 0x24 && (p[2] >> 6) <= 1) {  // MOVQ reg, disp(SP)
      bool has_disp = (p[2] >> 6) == 1;
      if (has_disp && (left < 5 || p[4] >= 0x80)) return false;
      uint64_t disp = has_disp ? p[4] : 0;
      bool is_rbp = p[0] == 0x48 && ((p[2] >> 3) & 7) == 5;
      if (is_rbp && rbp_depth == 0) {
        if (disp >= depth) return false;
        rbp_depth = depth - disp;
      }
      p += has_disp ? 5 : 4;
    } else if (left >= 5 && p[0] == 0xE8) {  // CALL rel32
      int32_t rel;
      __builtin_memcpy(&rel, p + 1, 4);
      uint64_t ret = entry + static_cast<uint64_t>(p + 5 - code);
      uint64_t target = ret + static_cast<int64_t>(rel);
      if (target < callback_lo || target >= callback_hi || rbp_depth == 0) return false;
      out->return_pc = ret;
      out->cfa_off = static_cast<uint32_t>(depth + 8);
      out->rbp_off = static_cast<uint32_t>(rbp_depth + 8);
      return true;
    } else {
      return false;
    }
  }
  return false;
}

}  // namespace cgoheap::agent
