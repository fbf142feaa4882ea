// Strings that come from a target process — its arguments, its executable's
// path, the names and file names in its symbols, the service name it was
// given — are bytes, not text. Two places need them to be text:
//
// - the wire: proto3 `string` fields must be valid UTF-8, or the message
//   does not parse at all (one Latin-1 file name in argv would cost the
//   whole report). WireString turns any bytes into valid UTF-8, losslessly:
//   bytes that are valid UTF-8 pass unchanged, except a backslash that is
//   followed by 'x'; every other byte, and such a backslash, is written
//   `\xHH` (two lower-case hex digits). Decoding is one rule: `\xHH` is the
//   byte HH (FromWireString). So "caf\xe9" (Latin-1) travels as the ASCII
//   text `caf\xe9`, and a literal `\x41` travels as `\x5cx41`.
// - a terminal: Printable escapes what would act on the terminal of whoever
//   reads the output (control characters, C1 controls, bidirectional
//   overrides), so a hostile argument cannot write into someone's terminal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cgoheap {

// The length of the valid UTF-8 sequence at the start of s (1-4), or 0 when
// s is empty or starts with an invalid one (overlong forms, surrogates and
// code points above U+10FFFF are invalid, as protobuf's check has it).
int Utf8SequenceLength(std::string_view s);
bool IsValidUtf8(std::string_view s);
// The code point of the valid sequence of length n at the start of s.
uint32_t Utf8CodePoint(std::string_view s, int n);
// C0 controls, DEL, C1 controls and the bidirectional controls: what acts
// on a terminal (or on how a line reads) instead of showing.
bool IsTerminalControl(uint32_t code_point);

std::string WireString(std::string_view bytes);
std::string FromWireString(std::string_view wire);

// For text meant for a terminal: newline, tab and carriage return as \n, \t
// and \r, other C0 controls and DEL as \xHH, C1 controls and bidirectional
// controls as \uHHHH, invalid UTF-8 as \xHH. Everything else is unchanged.
std::string Printable(std::string_view s);

}  // namespace cgoheap
