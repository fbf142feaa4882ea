// Source of fuzz/corpus/{elf,symbolizer}/tiny-*: a small C program whose
// DWARF has inlined calls (make_seeds.sh builds it).
#include <stdlib.h>
#include <string.h>

static inline char* dup_upper(const char* s) {
  size_t n = strlen(s);
  char* p = malloc(n + 1);
  for (size_t i = 0; i <= n; ++i) p[i] = (s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 : s[i];
  return p;
}

__attribute__((noinline)) char* make_name(const char* s) { return dup_upper(s); }

int main(int argc, char** argv) {
  char* leak = make_name(argc > 1 ? argv[1] : "seed");
  return leak[0] == 'X';
}
