// 1,000 C.CBytes blocks leaked from 8 goroutines by a small helper that the
// Go compiler inlines into its caller (Go 1.21 and later inline far more
// than 1.19 did). The report must show the helper with its own line, then
// the caller with the line of the call, as runtime.CallersFrames does.
package main

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

var kept = make(chan unsafe.Pointer, 1000)

func leakOne(i int) {
	kept <- C.CBytes([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}) // LEAK: 12 bytes
}

func batch(from, n int, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := from; i < from+n; i++ {
		leakOne(i) // CALLS leakOne
	}
}

func main() {
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go batch(g*125, 125, &wg)
	}
	wg.Wait()
	fmt.Println("leaked", len(kept))
}
