// A cgo-heavy loop for benchmarks: goroutines pass strings to C, and C code
// allocates, fills and frees buffers a few frames deep: 4 C allocations per
// iteration (C.CString, then a calloc and two mallocs in C). Nothing leaks. Prints
// how long the loop took and the CPU the process used, so overhead can be
// measured inside the program, apart from any launcher.
package main

// #include <stdlib.h>
// #include <string.h>
//
// static __attribute__((noipa)) size_t level3(const char *s, size_t n, const unsigned char *extra) {
//   char *buf = malloc(n + 64);
//   memcpy(buf, s, n);
//   size_t sum = extra[n % 128];
//   for (size_t i = 0; i < n; i += 8) sum += (unsigned char)buf[i];
//   free(buf);
//   return sum;
// }
// // The scratch block goes to level3 (noipa: the compiler cannot see it
// // unused and drop the calloc/free pair, as it did when it was not).
// static __attribute__((noipa)) size_t level2(const char *s, size_t n) {
//   unsigned char *scratch = calloc(4, 32);
//   size_t r = level3(s, n, scratch) + level3(s, n / 2, scratch);
//   free(scratch);
//   return r;
// }
// static __attribute__((noinline)) size_t level1(const char *s) {
//   return level2(s, strlen(s));
// }
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

var heapShift unsafe.Pointer

func main() {
	workers, iterations := 4, 200000
	if len(os.Args) > 2 {
		workers, _ = strconv.Atoi(os.Args[1])
		iterations, _ = strconv.Atoi(os.Args[2])
	}
	// CHURN_HEAP_SHIFT=N: one block of N bytes allocated first and kept, which
	// moves every later block of the main thread's heap by N (rounded to
	// glibc's 16). Where the loop's blocks fall against cache lines changes its
	// speed by several percent (bench/run.sh gives each round a shift of its own).
	if n, err := strconv.Atoi(os.Getenv("CHURN_HEAP_SHIFT")); err == nil && n > 0 {
		heapShift = C.malloc(C.size_t(n))
	}
	payload := strings.Repeat("cgoheap-", 16)
	start := time.Now()
	var wg sync.WaitGroup
	var total uint64
	var mu sync.Mutex
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var sum uint64
			for i := 0; i < iterations; i++ {
				cs := C.CString(payload[:64+(i+w)%64])
				sum += uint64(C.level1(cs))
				C.free(unsafe.Pointer(cs))
			}
			mu.Lock()
			total += sum
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("churn: %d allocations, checksum %d, elapsed_ms %.1f cpu_ms %.1f\n",
		workers*iterations*4, total, float64(elapsed.Microseconds())/1000,
		float64(cpu.Microseconds())/1000)
}
