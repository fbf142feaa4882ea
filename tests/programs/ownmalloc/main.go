// Leaks ten 100-byte blocks through an allocator the program defines
// itself (alloc.c): cgoheap cannot see them, and must say so rather than
// report no leaks (tests/e2e/run_test.cc).
package main

/*
#include <stdlib.h>

static void leak(int n) {
	for (int i = 0; i < n; i++) {
		void* p = malloc(100);
		(void)p;
	}
}
*/
import "C"

func main() { C.leak(10) }
