#include "proto/stack_id.h"

#include <string>

#include "common/sha256.h"

namespace cgoheap {

uint64_t StackIdOf(const v1::Stack& stack) {
  // 0xff separates the fields: it never occurs in UTF-8, which every string
  // on the wire is (common/escape.h).
  static constexpr char kSeparator[] = "\xff";
  Sha256 h;
  for (const v1::Frame& f : stack.frames()) {
    h.Update(f.function());
    h.Update(kSeparator);
    h.Update(f.file());
    h.Update(kSeparator);
    h.Update(std::to_string(f.line()));
    h.Update(kSeparator);
  }
  std::array<uint8_t, 32> d = h.Final();
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | d[i];
  return id == 0 ? 1 : id;
}

}  // namespace cgoheap
