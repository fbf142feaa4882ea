// Many goroutines allocate and free through cgo concurrently; one site leaks
// a known number of blocks: every 100th iteration of each worker.
package main

// #include <stdlib.h>
// #include <string.h>
//
// static void *make_buffer(size_t n) {
//   void *p = malloc(n);
//   memset(p, 7, n);
//   return p;
// }
// static void consume(void *p) { free(p); }
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

var kept []unsafe.Pointer
var mu sync.Mutex

func worker(id, iterations int, pause time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; i < iterations; i++ {
		if pause > 0 {
			time.Sleep(pause)
		}
		cs := C.CString("payload " + strconv.Itoa(i))
		buf := C.make_buffer(C.size_t(64 + i%512))
		C.consume(buf)
		C.free(unsafe.Pointer(cs))
		if i%100 == 0 {
			leak := C.make_buffer(48) // LEAK: 48 bytes each
			mu.Lock()
			kept = append(kept, leak)
			mu.Unlock()
		}
	}
}

func main() {
	workers, iterations := 8, 5000
	var pause time.Duration // optional third argument: microseconds between iterations
	if len(os.Args) > 2 {
		workers, _ = strconv.Atoi(os.Args[1])
		iterations, _ = strconv.Atoi(os.Args[2])
	}
	if len(os.Args) > 3 {
		us, _ := strconv.Atoi(os.Args[3])
		pause = time.Duration(us) * time.Microsecond
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go worker(w, iterations, pause, &wg)
	}
	wg.Wait()
	fmt.Println("leaked", len(kept))
}
