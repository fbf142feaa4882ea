// Leaks from the bottom of a deep Go recursion, deeper than the frames a
// record holds (ring.h, kMaxFrames), and from a shallow one: the deep
// stack's report ends with a note that it goes on.
package main

// #include <stdlib.h>
import "C"

import "fmt"

//go:noinline
func descend(n int, size C.size_t) {
	if n == 0 {
		C.malloc(size) // LEAK
		return
	}
	descend(n-1, size) // RECURSES
}

func main() {
	descend(300, 301) // DEEP
	descend(3, 33)    // SHALLOW
	fmt.Println("deepstack done")
}
