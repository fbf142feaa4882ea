// A C program that links the Go library tests/programs/golib (found by
// LD_LIBRARY_PATH: one build of it for each Go release).
#include <stdio.h>
#include <stdlib.h>

extern void GoLeak(int n);

int main(void) {
  char *mine = malloc(1000);  // HOST-LEAK: 1000 bytes
  __asm__ volatile("" : : "r"(mine) : "memory");  // kept: the compiler may not drop it
  GoLeak(3);  // HOST-CALLS-GO
  puts("host done");
  return 0;
}
