// Stacks that cross more than once: C code calling back into Go, which
// leaks C memory. Three paths, each leaking blocks of its own size:
//
//	Go -> C loop -> Go callback            10 blocks of 33 bytes
//	Go -> C -> Go -> C -> Go               5 blocks of 44 bytes
//	a C thread (pthread_create) -> Go      3 blocks of 55 bytes
package main

// #cgo CFLAGS: -O2 -g
// void c_loop(int n);
// void c_outer(int n);
// void c_inner(int n);
// void c_thread(int n);
import "C"

import (
	"fmt"
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

func main() {
	C.c_loop(10)  // GO-CALLS-LOOP
	C.c_outer(5)  // GO-CALLS-OUTER
	C.c_thread(3) // GO-CALLS-THREAD
	fmt.Println("leaked", len(kept))
}
