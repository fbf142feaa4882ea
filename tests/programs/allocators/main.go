// Every allocator entry point a C library may use, each leaking one block of
// a size of its own from a C function of its own, called from a Go line of
// its own; and realloc in each of its cases. Prints what realloc did.
//
// With "header" it prints whether a block malloc returns has bit 3 set in
// the byte 8 before it (never so in glibc's chunk headers: the agent's
// header on a block it samples).
//
// With "churn N" it leaks nothing instead: N rounds of allocating and
// freeing through every entry point, then it prints how many allocator
// events (allocations and frees) it made, for comparison with the agent's
// count, and how many blocks were not as the C library promises (too small
// for malloc_usable_size, misaligned, or with their bytes lost by realloc):
// the agent hands some blocks out past a header of its own.
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
// static int has_header(void) {
//   unsigned char *p = malloc(100);
//   int h = (p[-8] & 8) != 0;
//   free(p);
//   return h;
// }
// static int calloc_overflow(void) { return calloc(SIZE_MAX / 2, 4) == NULL; }  // no block
//
// // The compiler removes an allocation that is freed unused: each block
// // goes through a volatile pointer first.
// static void *escape(void *p) { sink[31] = p; return sink[31]; }
//
// // A block as promised: at least n usable bytes, aligned to align.
// static long bad;
// static long bad_blocks(void) { return bad; }
// static void *check(void *p, size_t n, size_t align) {
//   if (p == NULL || malloc_usable_size(p) < n || (uintptr_t)p % align != 0) bad++;
//   return escape(p);
// }
// static int zeroed(const unsigned char *p, size_t n) {
//   for (size_t i = 0; i < n; i++) if (p[i] != 0) return 0;
//   return 1;
// }
//
// // One round of allocating and freeing through every entry point: the
// // number of allocator events it makes (an allocation or a free each).
// static long churn_round(int i) {
//   size_t n = 24 + (size_t)(i % 200);
//   void *p;
//   free(check(malloc(n), n, 16));
//   p = check(calloc(2, n), 2 * n, 16);
//   if (!zeroed(p, 2 * n)) bad++;
//   memset(p, 0xab, 2 * n);  // dirty, for the next calloc that gets it
//   free(p);
//   p = check(realloc(none, n), n, 16);
//   memset(p, 7, n);
//   p = check(realloc(p, 3 * n), 3 * n, 16);
//   if (((unsigned char *)p)[n - 1] != 7) bad++;
//   p = realloc(p, 0);  // frees p
//   free(check(reallocarray(NULL, n, 2), 2 * n, 16));
//   if (posix_memalign(&p, 32, n) == 0) free(check(p, n, 32));
//   free(check(aligned_alloc(64, n), n, 64));
//   free(check(memalign(128, n), n, 128));
//   free(check(valloc(n), n, 4096));
//   free(check(pvalloc(n), 4096, 4096));
//   free(check(strdup(text + i % 100), 1, 1));
//   free(check(strndup(text, n / 2), 1, 1));
//   free(none);  // free(NULL): no event
//   // A small block grown past 512 KiB: at one sample per 524288 bytes the
//   // grown block is sampled more often than not, where the small one
//   // mostly was not (a block gains the agent's header by moving).
//   p = malloc(16);
//   memset(p, 9, 16);
//   p = check(realloc(p, 600000 + n), 600000 + n, 16);
//   if (((unsigned char *)p)[15] != 9) bad++;
//   free(p);
//   return 28;
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
	fmt.Println("events", events, "bad", C.bad_blocks())
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "header" {
		fmt.Println("header", C.has_header())
		return
	}
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
