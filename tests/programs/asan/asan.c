// Built with AddressSanitizer's shared runtime (tests/CMakeLists.txt), as
// gcc -fsanitize=address or go build -asan link it: cgoheap run refuses it
// before it runs (RunTest.AnAddressSanitizerProgramIsRefusedWithTheReason).
#include <stdio.h>
#include <stdlib.h>

int main(void) {
  char* volatile p = malloc(10);
  puts("ran");
  free(p);
  return 0;
}
