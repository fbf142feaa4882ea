// Stacks that differ only in their Go frames: one C function, called by one
// Go helper, at the same depth of the same goroutine's stack, by two Go
// callers in turn; by a recursion of varying depth; and by short-lived
// goroutines that reuse each other's g and stack. Each path leaks blocks of
// a size of its own, so a report that took one path's Go frames for
// another's shows the wrong line for some of the bytes.
//
//	samedepth [WORKERS ITERATIONS]
package main

// #include <stdlib.h>
// static __attribute__((noinline)) void *keep(size_t n) {
//   void *p = malloc(n);  // C-LEAK
//   __asm__ volatile("" : : "r"(p) : "memory");  // a frame of its own: no tail call
//   return p;
// }
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"sync"
)

//go:noinline
func leakVia(n int) {
	C.keep(C.size_t(n)) // VIA-CALLS
}

//go:noinline
func fromA() {
	leakVia(101) // A-CALLS
}

//go:noinline
func fromB() {
	leakVia(202) // B-CALLS
}

//go:noinline
func deep(d, n int) {
	if d == 0 {
		leakVia(n) // DEEP-LEAKS
		return
	}
	deep(d-1, n) // DEEP-RECURSES
}

//go:noinline
func shortA() {
	leakVia(404) // SHORT-A-CALLS
}

//go:noinline
func shortB() {
	leakVia(505) // SHORT-B-CALLS
}

func main() {
	workers, iterations := 4, 300
	if len(os.Args) > 2 {
		workers, _ = strconv.Atoi(os.Args[1])
		iterations, _ = strconv.Atoi(os.Args[2])
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < iterations; i++ {
				fromA()
				fromB()
				deep(i%3, 311+i%3) // MAIN-DEEP
			}
		}()
	}
	wg.Wait()
	// One goroutine at a time: each new one is likely to get the g and the
	// stack of the one before it.
	for i := 0; i < iterations; i++ {
		done := make(chan bool)
		go func(i int) {
			if i%2 == 0 {
				shortA()
			} else {
				shortB()
			}
			done <- true
		}(i)
		<-done
	}
	fmt.Printf("leaked %d\n", workers*iterations*3+iterations)
}
