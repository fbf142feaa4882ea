// Function names as the user's other tools show them. C++ (kv.cpp, behind a
// C API): two classes that both have an Insert, a templated method and an
// inlined method, each leaking one object. Go: leaks under a method, a
// closure and a generic function.
package main

// #cgo CXXFLAGS: -O2 -g -std=c++17
// #include <stdlib.h>
// #include "kv.h"
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
	fmt.Println("leaked", len(kept))
}
