// A C program whose allocator is not glibc's (guardalloc.c, linked: the
// agent's next malloc is its): blocks through every entry point, freed,
// then one leaked through each of malloc, calloc, realloc and memalign.
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink[4];

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 500;
  for (int i = 0; i < rounds; i++) {
    free(malloc(24 + i % 100));
    free(calloc(3, 10));
    void *p = realloc(NULL, 40);
    p = realloc(p, 5000);
    free(p);
    if (posix_memalign(&p, 64, 100) == 0) free(p);
    free(aligned_alloc(32, 64));
    free(memalign(128, 70));
    free(valloc(10));
    free(pvalloc(10));
    free(reallocarray(NULL, 4, 8));
    free(NULL);
  }
  sink[0] = malloc(1001);               // LEAK: malloc
  sink[1] = calloc(1, 1002);            // LEAK: calloc
  sink[2] = realloc(malloc(8), 1003);   // LEAK: realloc
  sink[3] = memalign(64, 1004);         // LEAK: memalign
  printf("leaked 4\n");
  return 0;
}
