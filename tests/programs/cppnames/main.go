// Function names as the user's other tools show them. C++ (kv.cpp, behind a
// C API): two classes that both have an Insert, a templated method and an
// inlined method, each leaking one object. C: two functions whose names are
// also C++ type encodings ("re" reads as "long double restrict", "i" as
// "int"), one inlined into its cgo wrapper, one not. Go: leaks under a
// method, a closure and a generic function.
package main

/*
#cgo CXXFLAGS: -O2 -g -std=c++17
#include <stdlib.h>
#include "kv.h"

static void* re(void) { return malloc(20); } // LEAK: re
static __attribute__((noinline)) char* i(int n) {
	char* p = malloc(n); // LEAK: i
	if (p != NULL) p[0] = 0; // (not a tail call: i keeps its frame)
	return p;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

var kept []unsafe.Pointer

type Buffer struct{ n int }

//go:noinline
func (b *Buffer) Fill() {
	kept = append(kept, C.malloc(C.size_t(b.n))) // LEAK: method
}

//go:noinline
func Keep[T any](v T) {
	kept = append(kept, C.malloc(C.size_t(unsafe.Sizeof(v))+40)) // LEAK: generic
}

func run() {
	leak := func() {
		kept = append(kept, C.malloc(33)) // LEAK: closure
	}
	leak()
}

func main() {
	C.kv_table_insert(1)
	C.kv_index_insert(2)
	C.kv_store_put(3)
	C.kv_table_grow(4)
	(&Buffer{n: 31}).Fill()
	Keep[int64](5) // 8 + 40 bytes
	run()
	kept = append(kept, C.re(), unsafe.Pointer(C.i(21)))
	fmt.Println("leaked", len(kept))
}
