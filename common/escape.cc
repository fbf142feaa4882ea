#include "common/escape.h"

#include <cstdint>

namespace cgoheap {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void AppendHexByte(std::string* out, unsigned char c) {
  out->append("\\x");
  out->push_back(kHex[c >> 4]);
  out->push_back(kHex[c & 15]);
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool StartsEscape(std::string_view s, size_t i) {
  return s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'x';
}

}  // namespace

int Utf8SequenceLength(std::string_view s) {
  if (s.empty()) return 0;
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;  // overlong
    if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;  // overlong
    if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0/C1 (overlong) or F5..FF
  }
  if (s.size() < static_cast<size_t>(n) || b(1) < lo || b(1) > hi) return 0;
  for (int i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xbf) return 0;
  }
  return n;
}

uint32_t Utf8CodePoint(std::string_view s, int n) {
  auto b = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i])); };
  switch (n) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1f) << 6) | (b(1) & 0x3f);
    case 3: return ((b(0) & 0x0f) << 12) | ((b(1) & 0x3f) << 6) | (b(2) & 0x3f);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3f) << 12) | ((b(2) & 0x3f) << 6) | (b(3) & 0x3f);
  }
}

bool IsTerminalControl(uint32_t cp) {
  return cp < 0x20 || cp == 0x7f ||
         (cp >= 0x80 && cp <= 0x9f) ||                    // C1: 0x9b is a CSI
         cp == 0x061c || cp == 0x200e || cp == 0x200f ||  // bidi marks
         (cp >= 0x202a && cp <= 0x202e) ||                // bidi embeddings, overrides
         (cp >= 0x2066 && cp <= 0x2069);                  // bidi isolates
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    // ASCII runs are the common case.
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int n = Utf8SequenceLength(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string WireString(std::string_view bytes) {
  if (IsValidUtf8(bytes) && bytes.find("\\x") == std::string_view::npos) {
    return std::string(bytes);
  }
  std::string out;
  out.reserve(bytes.size() + 16);
  for (size_t i = 0; i < bytes.size();) {
    if (StartsEscape(bytes, i)) {
      AppendHexByte(&out, '\\');
      ++i;
      continue;
    }
    int n = Utf8SequenceLength(bytes.substr(i));
    if (n == 0) {
      AppendHexByte(&out, static_cast<unsigned char>(bytes[i]));
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string FromWireString(std::string_view wire) {
  std::string out;
  out.reserve(wire.size());
  for (size_t i = 0; i < wire.size(); ++i) {
    if (StartsEscape(wire, i) && i + 3 < wire.size() && HexValue(wire[i + 2]) >= 0 &&
        HexValue(wire[i + 3]) >= 0) {
      out.push_back(static_cast<char>(HexValue(wire[i + 2]) * 16 + HexValue(wire[i + 3])));
      i += 3;
    } else {
      out.push_back(wire[i]);
    }
  }
  return out;
}

std::string Printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c == '\n' || c == '\t' || c == '\r') {
      out.append(c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r");
      ++i;
      continue;
    }
    int n = Utf8SequenceLength(s.substr(i));
    if (n <= 1) {  // C0 controls, DEL, invalid UTF-8
      AppendHexByte(&out, c);
      ++i;
      continue;
    }
    uint32_t cp = Utf8CodePoint(s.substr(i), n);
    if (IsTerminalControl(cp)) {
      out.append("\\u");
      for (int shift = 12; shift >= 0; shift -= 4) out.push_back(kHex[(cp >> shift) & 15]);
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

}  // namespace cgoheap
