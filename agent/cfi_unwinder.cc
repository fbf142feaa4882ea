#include "agent/cfi_unwinder.h"

#include <link.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace cgoheap::agent {
namespace {

// ---- the rule cache ----

// A rule packed in 64 bits.
//   bits 0-2  kind          bit 3  CFA base is RBP (else RSP)
//   bit 4     RBP saved     bits 8-31  CFA offset (signed)
//   bits 32-47 RBP save offset from the CFA (signed)
//   bits 48-63 return address offset from the CFA (signed)
enum Kind : uint64_t { kNormal = 1, kEndKind = 2, kNoInfoKind = 3, kUnsupportedKind = 4 };

struct Rule {
  uint64_t kind = kUnsupportedKind;
  bool cfa_rbp = false;
  bool rbp_saved = false;
  int64_t cfa_off = 0, rbp_off = 0, ra_off = -8;
};

uint64_t Pack(const Rule& r) {
  return r.kind | (uint64_t{r.cfa_rbp} << 3) | (uint64_t{r.rbp_saved} << 4) |
         ((static_cast<uint64_t>(r.cfa_off) & 0xffffff) << 8) |
         ((static_cast<uint64_t>(r.rbp_off) & 0xffff) << 32) |
         ((static_cast<uint64_t>(r.ra_off) & 0xffff) << 48);
}

Rule Unpack(uint64_t v) {
  Rule r;
  r.kind = v & 7;
  r.cfa_rbp = (v >> 3) & 1;
  r.rbp_saved = (v >> 4) & 1;
  r.cfa_off = static_cast<int64_t>(v << 32) >> 40;  // bits 8-31, sign-extended
  r.rbp_off = static_cast<int16_t>((v >> 32) & 0xffff);
  r.ra_off = static_cast<int16_t>(v >> 48);
  return r;
}

bool Fits(const Rule& r) {
  return r.cfa_off >= -(1 << 23) && r.cfa_off < (1 << 23) && r.rbp_off >= -32768 &&
         r.rbp_off < 32768 && r.ra_off >= -32768 && r.ra_off < 32768;
}

constexpr size_t kCacheSlots = 1 << 16;
constexpr int kProbe = 8;
constexpr uint64_t kBusy = 1;

struct Slot {
  std::atomic<uint64_t> key;
  std::atomic<uint64_t> rule;
};
constinit Slot g_cache[kCacheSlots]{};
constinit std::atomic<uint64_t> g_misses{0}, g_entries{0}, g_last_miss{0};

size_t SlotOf(uint64_t pc) { return (pc * 0x9e3779b97f4a7c15ULL) >> 48; }

bool CacheGet(uint64_t pc, uint64_t* rule) {
  size_t i = SlotOf(pc);
  for (int p = 0; p < kProbe; ++p) {
    Slot& s = g_cache[(i + p) & (kCacheSlots - 1)];
    uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == pc) {
      *rule = s.rule.load(std::memory_order_relaxed);
      return true;
    }
    if (k == 0) return false;
  }
  return false;
}

void CachePut(uint64_t pc, uint64_t rule) {
  size_t i = SlotOf(pc);
  for (int p = 0; p < kProbe; ++p) {
    Slot& s = g_cache[(i + p) & (kCacheSlots - 1)];
    uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == pc) return;  // another thread learnt it first
    if (k != 0) continue;
    uint64_t expected = 0;
    if (!s.key.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) {
      if (expected == pc) return;
      continue;
    }
    s.rule.store(rule, std::memory_order_relaxed);
    s.key.store(pc, std::memory_order_release);
    g_entries.fetch_add(1, std::memory_order_relaxed);
    return;
  }
}

// ---- reading .eh_frame ----

// Bounds-free readers: .eh_frame and .eh_frame_hdr are mapped parts of loaded
// objects, found through the loader's own program headers.
struct Reader {
  const uint8_t* p;

  uint8_t U8() { return *p++; }
  template <typename T>
  T Fixed() {
    T v;
    memcpy(&v, p, sizeof v);
    p += sizeof v;
    return v;
  }
  uint64_t Uleb() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = *p++;
      v |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) break;
    }
    return v;
  }
  int64_t Sleb() {
    int64_t v = 0;
    int shift = 0;
    uint8_t b;
    do {
      b = *p++;
      v |= int64_t{b & 0x7f} << shift;
      shift += 7;
    } while ((b & 0x80) && shift < 64);
    if (shift < 64 && (b & 0x40)) v |= -(int64_t{1} << shift);
    return v;
  }
  // A DW_EH_PE-encoded pointer; datarel is relative to data_base.
  bool Pointer(uint8_t enc, uint64_t data_base, uint64_t* out) {
    if (enc == 0xff) return false;  // omitted
    uint64_t field = reinterpret_cast<uint64_t>(p);
    uint64_t v;
    switch (enc & 0x0f) {
      case 0x00: v = Fixed<uint64_t>(); break;
      case 0x01: v = Uleb(); break;
      case 0x02: v = Fixed<uint16_t>(); break;
      case 0x03: v = Fixed<uint32_t>(); break;
      case 0x04: v = Fixed<uint64_t>(); break;
      case 0x09: v = static_cast<uint64_t>(Sleb()); break;
      case 0x0a: v = static_cast<uint64_t>(int64_t{Fixed<int16_t>()}); break;
      case 0x0b: v = static_cast<uint64_t>(int64_t{Fixed<int32_t>()}); break;
      case 0x0c: v = Fixed<uint64_t>(); break;
      default: return false;
    }
    switch (enc & 0x70) {
      case 0x00: break;
      case 0x10: v += field; break;      // pcrel
      case 0x30: v += data_base; break;  // datarel
      default: return false;
    }
    if (enc & 0x80) return false;  // indirect: not used for FDE addresses
    *out = v;
    return true;
  }
};

struct Object {
  uint64_t pc;
  const uint8_t* eh_frame_hdr = nullptr;
  uint64_t generation = 0;  // dlopens + dlcloses so far
};

int FindObject(dl_phdr_info* info, size_t, void* arg) {
  auto* obj = static_cast<Object*>(arg);
  obj->generation = info->dlpi_adds + info->dlpi_subs;
  bool inside = false;
  const uint8_t* hdr = nullptr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    uint64_t start = info->dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && obj->pc >= start && obj->pc < start + ph.p_memsz) inside = true;
    if (ph.p_type == PT_GNU_EH_FRAME) hdr = reinterpret_cast<const uint8_t*>(start);
  }
  if (!inside) return 0;
  obj->eh_frame_hdr = hdr;
  return 1;
}

// The register rules the unwinder cares about.
constexpr uint64_t kRegRbp = 6, kRegRsp = 7, kRegRa = 16;

enum class RegRule : uint8_t { kSame, kOffset, kUndefined, kOther };

struct CfaState {
  uint64_t cfa_reg = kRegRsp;
  int64_t cfa_off = 8;
  bool cfa_expression = false;
  RegRule rbp = RegRule::kSame, ra = RegRule::kOffset;
  int64_t rbp_off = 0, ra_off = -8;
};

struct Cie {
  uint64_t code_align = 1;
  int64_t data_align = -8;
  uint64_t ra_reg = kRegRa;
  uint8_t fde_enc = 0;
  bool has_z = false;
  const uint8_t* insns = nullptr;
  const uint8_t* end = nullptr;
};

bool ParseCie(const uint8_t* cie, Cie* out) {
  Reader r{cie};
  uint64_t len = r.Fixed<uint32_t>();
  if (len == 0xffffffff) return false;  // 64-bit DWARF: not produced for x86-64 here
  out->end = cie + 4 + len;
  if (r.Fixed<uint32_t>() != 0) return false;  // CIE id
  uint8_t version = r.U8();
  const char* aug = reinterpret_cast<const char*>(r.p);
  r.p += strlen(aug) + 1;
  if (aug[0] == 'e' && aug[1] == 'h') return false;
  out->code_align = r.Uleb();
  out->data_align = r.Sleb();
  out->ra_reg = version == 1 ? r.U8() : r.Uleb();
  if (aug[0] == 'z') {
    out->has_z = true;
    uint64_t aug_len = r.Uleb();
    const uint8_t* aug_end = r.p + aug_len;
    for (const char* a = aug + 1; *a; ++a) {
      if (*a == 'R') {
        out->fde_enc = r.U8();
      } else if (*a == 'P') {
        uint8_t enc = r.U8();
        uint64_t ignored;
        if (!r.Pointer(enc & 0x7f, 0, &ignored)) return false;
      } else if (*a == 'L') {
        r.U8();
      } else if (*a != 'S' && *a != 'B') {
        break;  // unknown: the length tells where the data ends
      }
    }
    r.p = aug_end;
  }
  out->insns = r.p;
  return true;
}

// Runs CFA instructions [p, end) from loc while loc <= target.
bool Execute(const uint8_t* p, const uint8_t* end, const Cie& cie, uint64_t loc, uint64_t target,
             const CfaState& initial, CfaState* st) {
  CfaState stack[8];
  int depth = 0;
  Reader r{p};
  auto set_offset = [&](uint64_t reg, int64_t off) {
    if (reg == kRegRbp) {
      st->rbp = RegRule::kOffset;
      st->rbp_off = off;
    } else if (reg == cie.ra_reg) {
      st->ra = RegRule::kOffset;
      st->ra_off = off;
    }
  };
  auto set_rule = [&](uint64_t reg, RegRule rule) {
    if (reg == kRegRbp) st->rbp = rule;
    if (reg == cie.ra_reg) st->ra = rule;
  };
  auto restore = [&](uint64_t reg) {
    if (reg == kRegRbp) {
      st->rbp = initial.rbp;
      st->rbp_off = initial.rbp_off;
    } else if (reg == cie.ra_reg) {
      st->ra = initial.ra;
      st->ra_off = initial.ra_off;
    }
  };
  while (r.p < end) {
    uint8_t op = r.U8();
    uint8_t high = op & 0xc0, low = op & 0x3f;
    if (high == 0x40) {  // advance_loc
      loc += low * cie.code_align;
      if (loc > target) return true;
      continue;
    }
    if (high == 0x80) {  // offset
      set_offset(low, static_cast<int64_t>(r.Uleb()) * cie.data_align);
      continue;
    }
    if (high == 0xc0) {  // restore
      restore(low);
      continue;
    }
    switch (op) {
      case 0x00: break;  // nop
      case 0x01: {       // set_loc
        uint64_t v;
        if (!r.Pointer(cie.fde_enc, 0, &v)) return false;
        loc = v;
        if (loc > target) return true;
        break;
      }
      case 0x02: loc += r.U8() * cie.code_align; if (loc > target) return true; break;
      case 0x03: loc += r.Fixed<uint16_t>() * cie.code_align; if (loc > target) return true; break;
      case 0x04: loc += r.Fixed<uint32_t>() * cie.code_align; if (loc > target) return true; break;
      case 0x05: {  // offset_extended
        uint64_t reg = r.Uleb();
        set_offset(reg, static_cast<int64_t>(r.Uleb()) * cie.data_align);
        break;
      }
      case 0x06: restore(r.Uleb()); break;                    // restore_extended
      case 0x07: set_rule(r.Uleb(), RegRule::kUndefined); break;  // undefined
      case 0x08: set_rule(r.Uleb(), RegRule::kSame); break;       // same_value
      case 0x09: {  // register: saved in another register
        uint64_t reg = r.Uleb();
        r.Uleb();
        set_rule(reg, RegRule::kOther);
        break;
      }
      case 0x0a:  // remember_state
        if (depth == 8) return false;
        stack[depth++] = *st;
        break;
      case 0x0b:  // restore_state
        if (depth == 0) return false;
        *st = stack[--depth];
        break;
      case 0x0c:  // def_cfa
        st->cfa_reg = r.Uleb();
        st->cfa_off = static_cast<int64_t>(r.Uleb());
        st->cfa_expression = false;
        break;
      case 0x0d: st->cfa_reg = r.Uleb(); st->cfa_expression = false; break;
      case 0x0e: st->cfa_off = static_cast<int64_t>(r.Uleb()); break;
      case 0x0f: {  // def_cfa_expression
        uint64_t n = r.Uleb();
        r.p += n;
        st->cfa_expression = true;
        break;
      }
      case 0x10:    // expression
      case 0x16: {  // val_expression
        uint64_t reg = r.Uleb();
        uint64_t n = r.Uleb();
        r.p += n;
        set_rule(reg, RegRule::kOther);
        break;
      }
      case 0x11: {  // offset_extended_sf
        uint64_t reg = r.Uleb();
        set_offset(reg, r.Sleb() * cie.data_align);
        break;
      }
      case 0x12:  // def_cfa_sf
        st->cfa_reg = r.Uleb();
        st->cfa_off = r.Sleb() * cie.data_align;
        st->cfa_expression = false;
        break;
      case 0x13: st->cfa_off = r.Sleb() * cie.data_align; break;  // def_cfa_offset_sf
      case 0x14:                                                  // val_offset
      case 0x15: {                                                // val_offset_sf
        uint64_t reg = r.Uleb();
        if (op == 0x14) r.Uleb(); else r.Sleb();
        set_rule(reg, RegRule::kOther);
        break;
      }
      case 0x2e: r.Uleb(); break;  // GNU_args_size
      case 0x2f: {                 // GNU_negative_offset_extended
        uint64_t reg = r.Uleb();
        set_offset(reg, -static_cast<int64_t>(r.Uleb()) * cie.data_align);
        break;
      }
      default: return false;
    }
  }
  return true;
}

// Learns the rule for pc (slow path: at most once per address).
__attribute__((noinline)) Rule Learn(uint64_t pc) {
  Rule rule;
  Object obj{pc};
  int in_object = dl_iterate_phdr(FindObject, &obj);
  if (obj.generation != 0) {
    g_cfi_objects_generation.store(obj.generation, std::memory_order_relaxed);
  }
  if (in_object == 0 || obj.eh_frame_hdr == nullptr) {
    rule.kind = kNoInfoKind;
    return rule;
  }
  const uint8_t* hdr = obj.eh_frame_hdr;
  const uint64_t hdr_addr = reinterpret_cast<uint64_t>(hdr);
  Reader r{hdr};
  if (r.U8() != 1) return rule;
  uint8_t frame_enc = r.U8(), count_enc = r.U8(), table_enc = r.U8();
  uint64_t eh_frame, count;
  if (!r.Pointer(frame_enc, hdr_addr, &eh_frame) || !r.Pointer(count_enc, hdr_addr, &count) ||
      table_enc != 0x3b) {  // datarel|sdata4: the search table ld always writes
    return rule;
  }
  const auto* table = reinterpret_cast<const int32_t*>(r.p);
  // Last entry with initial location <= pc.
  int64_t lo = 0, hi = static_cast<int64_t>(count) - 1, found = -1;
  while (lo <= hi) {
    int64_t mid = (lo + hi) / 2;
    if (hdr_addr + table[2 * mid] <= pc) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (found < 0) {
    rule.kind = kNoInfoKind;
    return rule;
  }
  const uint8_t* fde = hdr + table[2 * found + 1];
  Reader f{fde};
  uint64_t len = f.Fixed<uint32_t>();
  if (len == 0xffffffff) return rule;
  const uint8_t* fde_end = fde + 4 + len;
  const uint8_t* cie_ptr_field = f.p;
  uint32_t cie_off = f.Fixed<uint32_t>();
  Cie cie;
  if (!ParseCie(cie_ptr_field - cie_off, &cie)) return rule;
  uint64_t pc_begin, pc_range;
  if (!f.Pointer(cie.fde_enc, 0, &pc_begin) || !f.Pointer(cie.fde_enc & 0x0f, 0, &pc_range)) {
    return rule;
  }
  if (pc < pc_begin || pc >= pc_begin + pc_range) {
    rule.kind = kNoInfoKind;
    return rule;
  }
  if (cie.has_z) f.p += f.Uleb();
  CfaState initial;
  if (!Execute(cie.insns, cie.end, cie, 0, ~uint64_t{0}, initial, &initial)) return rule;
  CfaState st = initial;
  if (!Execute(f.p, fde_end, cie, pc_begin, pc, initial, &st)) return rule;
  if (st.ra == RegRule::kUndefined) {
    rule.kind = kEndKind;
    return rule;
  }
  if (st.cfa_expression || (st.cfa_reg != kRegRsp && st.cfa_reg != kRegRbp) ||
      st.ra != RegRule::kOffset || st.rbp == RegRule::kOther || st.rbp == RegRule::kUndefined) {
    return rule;  // unsupported
  }
  rule.kind = kNormal;
  rule.cfa_rbp = st.cfa_reg == kRegRbp;
  rule.cfa_off = st.cfa_off;
  rule.rbp_saved = st.rbp == RegRule::kOffset;
  rule.rbp_off = st.rbp_off;
  rule.ra_off = st.ra_off;
  if (!Fits(rule)) rule = Rule();
  return rule;
}

}  // namespace

bool CheckedRead(uint64_t addr, void* out, size_t len) {
  iovec local{out, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == static_cast<ssize_t>(len);
}

StepResult CfiStep(UnwindRegs* regs, bool is_return_address, StepTrace* trace, bool checked) {
  uint64_t lookup = is_return_address ? regs->pc - 1 : regs->pc;
  uint64_t packed;
  if (!CacheGet(lookup, &packed)) {
    g_misses.fetch_add(1, std::memory_order_relaxed);
    g_last_miss.store(lookup, std::memory_order_relaxed);
    packed = Pack(Learn(lookup));
    CachePut(lookup, packed);
  }
  Rule rule = Unpack(packed);
  switch (rule.kind) {
    case kNormal: break;
    case kEndKind: return StepResult::kEnd;
    case kNoInfoKind: return StepResult::kNoInfo;
    default: return StepResult::kUnsupported;
  }
  uint64_t cfa = (rule.cfa_rbp ? regs->bp : regs->sp) + rule.cfa_off;
  // The caller's frame is above this one; anything else is a broken stack.
  if (cfa <= regs->sp || (cfa & 7) != 0 || cfa - regs->sp > (uint64_t{1} << 26)) {
    return StepResult::kBadStack;
  }
  uint64_t ra, bp = regs->bp;
  if (checked) {
    if (!CheckedRead(cfa + rule.ra_off, &ra, 8) ||
        (rule.rbp_saved && !CheckedRead(cfa + rule.rbp_off, &bp, 8))) {
      return StepResult::kBadStack;
    }
  } else {
    ra = *reinterpret_cast<const uint64_t*>(cfa + rule.ra_off);
    if (rule.rbp_saved) bp = *reinterpret_cast<const uint64_t*>(cfa + rule.rbp_off);
  }
  regs->bp = bp;
  if (trace != nullptr) {
    trace->ra_slot = cfa + rule.ra_off;
    trace->rbp_slot = rule.rbp_saved ? cfa + rule.rbp_off : 0;
    trace->cfa_from_rbp = rule.cfa_rbp;
  }
  regs->sp = cfa;
  regs->pc = ra;
  return ra == 0 ? StepResult::kEnd : StepResult::kOk;
}

constinit std::atomic<uint64_t> g_cfi_objects_generation{0};

CfiCacheStats CfiStats() {
  return {g_misses.load(std::memory_order_relaxed), g_entries.load(std::memory_order_relaxed),
          g_last_miss.load(std::memory_order_relaxed)};
}

}  // namespace cgoheap::agent
