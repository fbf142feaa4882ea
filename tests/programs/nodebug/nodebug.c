// A C program built without debug information (but with a build id), as
// most distribution packages are: symbolizing it makes libdw look for its
// debug info elsewhere, debuginfod servers included when allowed.
#include <stdlib.h>

void* volatile kept;  // the block escapes: the compiler cannot drop the call

int main(void) {
  kept = malloc(100);  // leaked
  return kept == NULL;
}
