#include "symbolize/gopclntab.h"

#include <cstring>

namespace cgoheap {
namespace {

constexpr uint32_t kMagic118 = 0xfffffff0;
constexpr uint32_t kMagic120 = 0xfffffff1;

// Field indices of runtime._func (uint32 each).
constexpr int kEntryOff = 0;
constexpr int kNameOff = 1;
constexpr int kPcFile = 5;
constexpr int kPcLn = 6;
constexpr int kNpcdata = 7;
constexpr int kCuOffset = 8;
// runtime._func's fixed part ends with funcID, flag, a pad byte and
// nfuncdata; Go 1.20 added startLine before them.
constexpr uint32_t kFuncFixed118 = 40, kFuncFixed120 = 44;
constexpr uint32_t kPcdataInlTreeIndex = 2;
constexpr uint32_t kFuncdataInlTree = 3;
// runtime.inlinedCall: Go 1.20+ {funcID u8, _ [3]byte, nameOff i32,
// parentPc i32, startLine i32}; Go 1.18-1.19 {parent i16, funcID u8, _ u8,
// file i32, line i32, func_ i32, parentPc i32}.
struct InlinedCallLayout {
  uint32_t size, name_off, parent_pc;
};
constexpr InlinedCallLayout kInlined118{20, 12, 16}, kInlined120{16, 4, 8};

uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t U64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Reads a little-endian base-128 varint; returns bytes consumed or 0.
size_t Varint(const uint8_t* p, const uint8_t* end, uint32_t* out) {
  uint32_t v = 0;
  for (size_t i = 0, shift = 0; p + i < end && shift < 35; ++i, shift += 7) {
    v |= uint32_t{p[i] & 0x7fu} << shift;
    if ((p[i] & 0x80) == 0) {
      *out = v;
      return i + 1;
    }
  }
  return 0;
}

}  // namespace

bool GoPclntab::Init(const uint8_t* data, size_t size, uint64_t text_addr) {
  data_ = data;
  size_ = size;
  if (data == nullptr || size < 8 + 8 * 8) return false;
  uint32_t magic = U32(data);
  if (magic != kMagic118 && magic != kMagic120) return false;
  if (data[4] != 0 || data[5] != 0 || data[7] != 8) return false;  // 64-bit only
  go120_ = magic == kMagic120;
  min_lc_ = data[6] == 0 ? 1 : data[6];
  uint64_t nfunc = U64(data + 8);
  text_start_ = U64(data + 24);
  if (text_start_ == 0) text_start_ = text_addr;
  // Every pc is text_start_ plus a 32-bit offset: a start that leaves no
  // room for that would wrap, and put a function's end before its entry.
  if (text_start_ > UINT64_MAX - UINT32_MAX) return false;
  funcname_off_ = U64(data + 32);
  cu_off_ = U64(data + 40);
  filetab_off_ = U64(data + 48);
  pctab_off_ = U64(data + 56);
  pcln_off_ = U64(data + 64);
  if (nfunc > (1u << 26) || pcln_off_ > size ||
      (size - pcln_off_) / 8 < nfunc + 1 || funcname_off_ > size || cu_off_ > size ||
      filetab_off_ > size || pctab_off_ > size) {
    return false;
  }
  nfunc_ = static_cast<uint32_t>(nfunc);
  return nfunc_ > 0;
}

uint64_t GoPclntab::text_end() const {
  return text_start_ + U32(data_ + pcln_off_ + uint64_t{nfunc_} * 8);
}

bool GoPclntab::FuncAt(uint32_t i, Func* f) const {
  if (i >= nfunc_) return false;
  const uint8_t* ft = data_ + pcln_off_;
  f->entry = text_start_ + U32(ft + uint64_t{i} * 8);
  f->func_off = U32(ft + uint64_t{i} * 8 + 4);
  f->end = text_start_ + U32(ft + uint64_t{i + 1} * 8);
  return true;
}

bool GoPclntab::FuncField(uint32_t func_off, int index, uint32_t* out) const {
  uint64_t off = pcln_off_ + uint64_t{func_off} + uint64_t(index) * 4;
  if (off + 4 > size_) return false;
  *out = U32(data_ + off);
  return true;
}

bool GoPclntab::FindFunc(uint64_t pc, Func* f) const {
  if (nfunc_ == 0 || pc < text_start_ || pc >= text_end()) return false;
  uint64_t rel = pc - text_start_;
  const uint8_t* ft = data_ + pcln_off_;
  uint32_t lo = 0, hi = nfunc_;  // find last i with entry(i) <= rel
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (U32(ft + uint64_t{mid} * 8) <= rel) lo = mid; else hi = mid;
  }
  if (!FuncAt(lo, f) || pc < f->entry) return false;
  uint32_t entry_off;
  if (!FuncField(f->func_off, kEntryOff, &entry_off) ||
      text_start_ + entry_off != f->entry) {
    return false;
  }
  // The line table covers exactly the function's own code.
  uint32_t pcln;
  int32_t line;
  return FuncField(f->func_off, kPcLn, &pcln) && PcValue(*f, pcln, pc, &line);
}

std::string_view GoPclntab::CStr(uint64_t off) const {
  if (off >= size_) return {};
  const char* s = reinterpret_cast<const char*>(data_ + off);
  const void* nul = std::memchr(s, 0, size_ - off);
  return nul ? std::string_view(s, static_cast<const char*>(nul) - s) : std::string_view();
}

std::string_view GoPclntab::FuncName(const Func& f) const {
  uint32_t nameoff;
  if (!FuncField(f.func_off, kNameOff, &nameoff)) return {};
  return CStr(funcname_off_ + nameoff);
}

bool GoPclntab::PcValue(const Func& f, uint32_t table_off, uint64_t pc, int32_t* out) const {
  if (table_off == 0) return false;
  uint64_t start = pctab_off_ + table_off;
  if (start >= size_) return false;
  const uint8_t* p = data_ + start;
  const uint8_t* end = data_ + size_;
  int32_t val = -1;
  uint64_t cur = f.entry;
  for (bool first = true;; first = false) {
    if (p >= end) return false;
    uint32_t uv;
    size_t n = Varint(p, end, &uv);
    if (n == 0 || (uv == 0 && !first)) return false;
    p += n;
    // Go adds in int32 and wraps; so does this (in uint32: no overflow).
    val = static_cast<int32_t>(static_cast<uint32_t>(val) + (-(uv & 1) ^ (uv >> 1)));
    uint32_t pcdelta;
    n = Varint(p, end, &pcdelta);
    if (n == 0) return false;
    p += n;
    cur += uint64_t{pcdelta} * min_lc_;
    if (pc < cur) {
      *out = val;
      return true;
    }
  }
}

bool GoPclntab::Line(const Func& f, uint64_t pc, std::string_view* file, int32_t* line) const {
  uint32_t pcfile, pcln, cu;
  if (!FuncField(f.func_off, kPcFile, &pcfile) || !FuncField(f.func_off, kPcLn, &pcln) ||
      !FuncField(f.func_off, kCuOffset, &cu)) {
    return false;
  }
  int32_t fileno, ln;
  if (!PcValue(f, pcln, pc, &ln) || !PcValue(f, pcfile, pc, &fileno) || fileno < 0) return false;
  uint64_t cu_entry = cu_off_ + (uint64_t{cu} + uint64_t(fileno)) * 4;
  if (cu_entry + 4 > size_) return false;
  uint32_t file_off = U32(data_ + cu_entry);
  if (file_off == 0xffffffff) return false;
  *file = CStr(filetab_off_ + file_off);
  *line = ln;
  return !file->empty();
}

bool GoPclntab::PcData(const Func& f, uint32_t i, uint64_t pc, int32_t* out) const {
  uint32_t npcdata, table;
  uint32_t fixed = go120_ ? kFuncFixed120 : kFuncFixed118;
  if (!FuncField(f.func_off, kNpcdata, &npcdata) || i >= npcdata ||
      !FuncField(f.func_off, static_cast<int>(fixed / 4 + i), &table)) {
    return false;
  }
  return PcValue(f, table, pc, out);
}

const uint8_t* GoPclntab::FuncData(const Func& f, uint32_t i, size_t* avail) const {
  uint32_t fixed = go120_ ? kFuncFixed120 : kFuncFixed118;
  uint64_t last = pcln_off_ + uint64_t{f.func_off} + fixed - 1;  // nfuncdata
  uint32_t npcdata, off;
  if (gofunc_ == nullptr || last >= size_ || i >= data_[last] ||
      !FuncField(f.func_off, kNpcdata, &npcdata) || npcdata > 1024 ||
      !FuncField(f.func_off, static_cast<int>(fixed / 4 + npcdata + i), &off) ||
      off == 0xffffffff || off >= gofunc_size_) {
    return nullptr;
  }
  *avail = gofunc_size_ - off;
  return gofunc_ + off;
}

int GoPclntab::Frames(const Func& f, uint64_t pc, Frame* out, int max) const {
  size_t avail = 0;
  const uint8_t* tree = FuncData(f, kFuncdataInlTree, &avail);
  const InlinedCallLayout& layout = go120_ ? kInlined120 : kInlined118;
  int n = 0;
  while (n < max) {
    Frame& fr = out[n];
    if (!Line(f, pc, &fr.file, &fr.line)) break;
    int32_t ix = -1;
    if (tree == nullptr || !PcData(f, kPcdataInlTreeIndex, pc, &ix) || ix < 0 ||
        uint64_t(ix) + 1 > avail / layout.size) {
      fr.function = FuncName(f);
      return n + 1;
    }
    // pc is in a call inlined at tree[ix]: that callee's frame, then the
    // caller's, at the instruction that stands for the call (parentPc).
    const uint8_t* call = tree + uint64_t(ix) * layout.size;
    fr.function = CStr(funcname_off_ + U32(call + layout.name_off));
    ++n;
    uint64_t parent = f.entry + U32(call + layout.parent_pc);
    if (parent >= f.end) break;
    pc = parent;
  }
  return n;
}

bool GoPclntab::FuncDataLooksRight(const uint8_t* gofunc, size_t size) const {
  GoPclntab probe = *this;
  probe.SetFuncData(gofunc, size);
  const InlinedCallLayout& layout = go120_ ? kInlined120 : kInlined118;
  int good = 0;
  Func f;
  for (uint32_t i = 0; i < nfunc_ && good < 16; ++i) {
    size_t avail = 0;
    const uint8_t* tree;
    if (!FuncAt(i, &f) || (tree = probe.FuncData(f, kFuncdataInlTree, &avail)) == nullptr) {
      continue;
    }
    if (avail < layout.size) return false;
    uint32_t name = U32(tree + layout.name_off), parent_pc = U32(tree + layout.parent_pc);
    std::string_view s = CStr(funcname_off_ + name);
    if (s.empty() || s.find('.') == std::string_view::npos || parent_pc >= f.end - f.entry) {
      return false;
    }
    ++good;
  }
  return good > 0;
}

bool GoPclntab::FindByName(std::string_view name, Func* f) const {
  for (uint32_t i = 0; i < nfunc_; ++i) {
    if (FuncAt(i, f) && FuncName(*f) == name) return true;
  }
  return false;
}

}  // namespace cgoheap
