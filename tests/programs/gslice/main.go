// Leaks ten 24-byte objects from glib's slice allocator, after making its
// pool grow from another call (tests/e2e/run_test.cc): with the slice
// allocator's pools, the leak would show as the pool's block with the stack
// of the first call; with every slice a malloc of its own, as itself.
// Prints the allocator switches as C code sees them.
package main

/*
#cgo pkg-config: glib-2.0
#include <stdio.h>
#include <stdlib.h>
#include <glib.h>

static void churn(int n) {
	for (int i = 0; i < n; i++) g_slice_free1(24, g_slice_alloc(24)); // CHURN
}

static void leak(int n) {
	for (int i = 0; i < n; i++) {
		gpointer p = g_slice_alloc(24); // LEAK: 10 x 24 bytes
		(void)p;
	}
}

static void print_switches(void) {
	const char* names[] = {"G_SLICE", "PYTHONMALLOC"};
	for (int i = 0; i < 2; i++) {
		const char* v = getenv(names[i]);
		printf("%s%s=%s", i ? " " : "", names[i], v ? v : "(unset)");
	}
	printf("\n");
	fflush(stdout);
}
*/
import "C"

func main() {
	C.print_switches()
	C.churn(1000)
	C.leak(10) // GO-CALLS-LEAK
}
