// A block that glibc's main arena still points into after it was handed
// out: last_remainder, the chunk the arena's latest split left over, is not
// updated when that chunk is merged and allocated again
// (client/exit_scan_test.cc, ExitScanTest.GlibcsLastRemainderDoesNotHoldABlock).
// A fresh process, so that no free chunk of someone else's is a better fit.
//
// Prints the dropped block's address and the thread pointer, in hex, then
// waits for its standard input to close.
#include <asm/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kLarge = 4000, kSmall = 1000 };  // kSmall: a small bin's size, and a cache's

int main(void) {
  void* cached[7];  // as many as a thread cache's bin holds
  for (int i = 0; i < 7; i++) cached[i] = malloc(kSmall);
  char* a = malloc(kLarge);
  void* volatile guard = malloc(kLarge);  // a is not merged into the top when freed
  free(a);
  char* small = malloc(kSmall);  // split from a: last_remainder is what is left
  for (int i = 0; i < 7; i++) free(cached[i]);  // the cache's bin is full:
  free(small);                                  // small goes back into a's chunk
  char* dropped = malloc(kLarge);               // all of a's chunk again
  // The premise: the split and the reuse both came from a.
  if (small != a || dropped != a) return 3;
  unsigned long tp = 0;
  if (syscall(SYS_arch_prctl, ARCH_GET_FS, &tp) != 0) return 4;
  printf("%lx %lx\n", (unsigned long)dropped, tp);
  fflush(stdout);
  dropped = NULL;
  char c;
  while (read(0, &c, 1) > 0) {
  }
  (void)guard;
  return 0;
}
