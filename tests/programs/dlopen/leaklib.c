// A library the dlopen test program loads at run time, after the agent took
// its snapshot of the process's mappings.
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) static void *fill(size_t n) {
  void *p = malloc(n);  // LEAK: 40 bytes from a dlopened library
  memset(p, 3, n);
  return p;
}

void *leaklib_make(size_t n) { return fill(n); }
