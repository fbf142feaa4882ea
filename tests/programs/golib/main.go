// A Go library for C programs (-buildmode=c-shared): its Go runtime lives in
// the library, not in the executable. golib_host.c links it at start-up;
// golib_dlopen.c loads it with dlopen, as Python's ctypes does. Each leak
// has a marked line the test looks for.
package main

// #include <stdlib.h>
import "C"

import "unsafe"

var kept []unsafe.Pointer

// GoLeak leaks n blocks of 48 bytes and one C string of 21 bytes, and frees
// n blocks of 64 bytes it made on the way.
//
//export GoLeak
func GoLeak(n C.int) {
	for i := 0; i < int(n); i++ {
		p := C.malloc(48) // LEAK: 48 bytes
		C.free(C.malloc(64))
		kept = append(kept, p)
	}
	leakString()
}

//go:noinline
func leakString() {
	s := C.CString("twenty bytes, and 0!") // LEAK: 21 bytes
	_ = s
}

func main() {}
