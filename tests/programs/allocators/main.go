// Every allocator entry point a C library may use, each leaking one block of
// a size of its own from a C function of its own, called from a Go line of
// its own; and realloc in each of its cases. Prints what realloc did.
//
// With "churn N" it leaks nothing instead: N rounds of allocating and
// freeing through every entry point, then it prints how many allocator
// events (allocations and frees) it made, for comparison with the agent's
// count.
package main

// #cgo CFLAGS: -O2 -g
// #define _GNU_SOURCE
// #include <malloc.h>
// #include <stdint.h>
// #include <stdio.h>
// #include <stdlib.h>
// #include <string.h>
//
// static void *volatile sink[32];
// static int nsink;
// static void keep(void *p) { sink[nsink++] = p; }
// static char text[200] = "0123456789012345678901234567890123456789012345678901234567890123456789"
//                         "0123456789012345678901234567890123456789012345678901234567890123456789"
//                         "0123456789012345678901234567890123456789";
//
// static void leak_malloc(void) { keep(malloc(101)); }                                  // C: malloc
// static void leak_calloc(void) { keep(calloc(3, 34)); }                                // C: calloc
// static int leak_realloc_moved(void) {
//   char *p = malloc(16), *blocker = malloc(16);  // the block cannot grow in place
//   char *q = realloc(p, 200003);  /* past the mmap threshold: moves */                   // C: realloc moved
//   free(blocker);
//   keep(q);
//   return q != p;
// }
// static int leak_realloc_in_place(void) {
//   char *p = malloc(1200);
//   char *q = realloc(p, 1040);                                                         // C: realloc in place
//   keep(q);
//   return q == p;
// }
// static void *volatile none;  // not a constant NULL: GCC would make realloc(NULL, n) a malloc
// static void leak_realloc_null(void) { keep(realloc(none, 105)); }                    // C: realloc NULL
// static int realloc_zero(void) {
//   void *p = malloc(777);
//   return realloc(p, 0) == NULL;  // frees p: no leak
// }
// static int leak_realloc_failed(void) {
//   char *p = malloc(106);                                                              // C: realloc failed
//   char *q = realloc(p, SIZE_MAX - 4096);  /* more than any allocator gives */
//   keep(p);
//   return q == NULL;
// }
// static void leak_reallocarray(void) { keep(reallocarray(NULL, 107, 1)); }            // C: reallocarray
// static void leak_posix_memalign(void) {
//   void *p = NULL;
//   if (posix_memalign(&p, 64, 108) == 0) keep(p);                                     // C: posix_memalign
// }
// static void leak_aligned_alloc(void) { keep(aligned_alloc(16, 109)); }               // C: aligned_alloc
// static void leak_memalign(void) { keep(memalign(32, 110)); }                         // C: memalign
// static void leak_valloc(void) { keep(valloc(111)); }                                 // C: valloc
// static void leak_pvalloc(void) { keep(pvalloc(112)); }                               // C: pvalloc
// static void leak_strdup(void) { text[112] = 0; keep(strdup(text)); text[112] = '0'; } // C: strdup
// static void leak_strndup(void) { keep(strndup(text, 114)); }                         // C: strndup
// static int calloc_overflow(void) { return calloc(SIZE_MAX / 2, 4) == NULL; }  // no block
//
// // The compiler removes an allocation that is freed unused: each block
// // goes through a volatile pointer first.
// static void *escape(void *p) { sink[31] = p; return sink[31]; }
//
// // One round of allocating and freeing through every entry point: the
// // number of allocator events it makes (an allocation or a free each).
// static long churn_round(int i) {
//   size_t n = 24 + (size_t)(i % 200);
//   void *p;
//   free(escape(malloc(n)));
//   free(escape(calloc(2, n)));
//   p = escape(realloc(none, n));
//   p = escape(realloc(p, 3 * n));
//   p = realloc(p, 0);  // frees p
//   free(escape(reallocarray(NULL, n, 2)));
//   if (posix_memalign(&p, 32, n) == 0) free(escape(p));
//   free(escape(aligned_alloc(64, n)));
//   free(escape(memalign(128, n)));
//   free(escape(valloc(n)));
//   free(escape(pvalloc(n)));
//   free(escape(strdup(text + i % 100)));
//   free(escape(strndup(text, n / 2)));
//   free(none);  // free(NULL): no event
//   return 24;
// }
import "C"

import (
	"fmt"
	"os"
	"strconv"
)

func churn(rounds int) {
	var events int64
	for i := 0; i < rounds; i++ {
		events += int64(C.churn_round(C.int(i)))
	}
	fmt.Println("events", events)
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "churn" {
		rounds, _ := strconv.Atoi(os.Args[2])
		churn(rounds)
		return
	}
	C.leak_malloc()                      // GO: malloc
	C.leak_calloc()                      // GO: calloc
	moved := C.leak_realloc_moved()      // GO: realloc moved
	inPlace := C.leak_realloc_in_place() // GO: realloc in place
	C.leak_realloc_null()                // GO: realloc NULL
	zero := C.realloc_zero()             // GO: realloc zero
	failed := C.leak_realloc_failed()    // GO: realloc failed
	C.leak_reallocarray()                // GO: reallocarray
	C.leak_posix_memalign()              // GO: posix_memalign
	C.leak_aligned_alloc()               // GO: aligned_alloc
	C.leak_memalign()                    // GO: memalign
	C.leak_valloc()                      // GO: valloc
	C.leak_pvalloc()                     // GO: pvalloc
	C.leak_strdup()                      // GO: strdup
	C.leak_strndup()                     // GO: strndup
	overflow := C.calloc_overflow()
	fmt.Println("moved", moved, "in place", inPlace, "zero freed", zero, "failed", failed,
		"calloc overflow", overflow)
}
