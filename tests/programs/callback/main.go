// Stacks that cross more than once: C code calling back into Go, which
// leaks C memory. Three paths, each leaking blocks of its own size:
//
//	Go -> C loop -> Go callback            10 blocks of 33 bytes
//	Go -> C -> Go -> C -> Go               5 blocks of 44 bytes
//	a C thread (pthread_create) -> Go      3 blocks of 55 bytes
//
// With "serve SECONDS" it is a service instead: for SECONDS it serves
// requests, each a C call that calls back into Go, which allocates 66
// bytes and frees them, except every 50th: a growth leak in a callback.
// It prints READY when it starts serving.
package main

// #cgo CFLAGS: -O2 -g
// #include <stdlib.h>
// void c_loop(int n);
// void c_outer(int n);
// void c_inner(int n);
// void c_thread(int n);
// void c_request(int i);
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"
)

var kept []unsafe.Pointer

func keep(p unsafe.Pointer) { kept = append(kept, p) }

//export goLeak
func goLeak(i C.int) {
	keep(C.CBytes(make([]byte, 33))) // LEAK: 33 bytes
}

//export goMiddle
func goMiddle(n C.int) {
	C.c_inner(n) // MIDDLE-CALLS
}

//export goLeakDeep
func goLeakDeep(i C.int) {
	keep(C.CBytes(make([]byte, 44))) // LEAK: 44 bytes
}

//export goLeakFromCThread
func goLeakFromCThread(i C.int) {
	keep(C.CBytes(make([]byte, 55))) // LEAK: 55 bytes
}

//export goServe
func goServe(i C.int) {
	p := C.CBytes(make([]byte, 66)) // LEAK: growth in a callback
	if i%50 == 0 {
		keep(p)
	} else {
		C.free(p)
	}
}

func serve(seconds int) {
	fmt.Println("READY")
	start := time.Now()
	for i := 0; time.Since(start) < time.Duration(seconds)*time.Second; i++ {
		C.c_request(C.int(i)) // GO-CALLS-REQUEST
		time.Sleep(2 * time.Millisecond)
	}
	fmt.Println("served, leaked", len(kept))
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "serve" {
		seconds, _ := strconv.Atoi(os.Args[2])
		serve(seconds)
		return
	}
	C.c_loop(10)  // GO-CALLS-LOOP
	C.c_outer(5)  // GO-CALLS-OUTER
	C.c_thread(3) // GO-CALLS-THREAD
	fmt.Println("leaked", len(kept))
}
