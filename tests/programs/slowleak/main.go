// A service that never exits on its own: it serves simulated requests
// through cgo for the given number of seconds. Each request churns C buffers;
// a cache fills during the first 64 requests (then it prints READY) and then stays; one allocation is
// made at start-up; and one request in 50 forgets to free a C buffer.
package main

// #include <stdlib.h>
// #include <string.h>
//
// void * volatile startup;
// static void init_once(void) { startup = malloc(8192); } // STARTUP
// static void *cache[64];
// static void cache_put(int i) { if (!cache[i]) cache[i] = malloc(4096); } // CACHE
// static size_t handle(const char *req, int forget) {
//   size_t n = strlen(req);
//   char *buf = malloc(n + 256); // CHURN
//   memcpy(buf, req, n);
//   size_t r = (unsigned char)buf[n / 2];
//   if (!forget) free(buf);
//   return r;
// }
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"
)

func main() {
	seconds := 30
	if len(os.Args) > 1 {
		seconds, _ = strconv.Atoi(os.Args[1])
	}
	C.init_once()
	start := time.Now()
	var sum uint64
	for i := 0; time.Since(start) < time.Duration(seconds)*time.Second; i++ {
		if i < 64 {
			C.cache_put(C.int(i))
		} else if i == 64 {
			fmt.Println("READY") // the cache is full
		}
		req := C.CString("GET /item/" + strconv.Itoa(i))
		forget := 0
		if i%50 == 0 {
			forget = 1
		}
		sum += uint64(C.handle(req, C.int(forget))) // LEAK: growth
		C.free(unsafe.Pointer(req))
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("done", sum)
}
