// A package whose tests leak, for `go test -exec 'cgoheap run --'`
// (RunTest.GoTestExecRunsEachTestBinaryUnderCgoheap).
package gotest

// #include <stdlib.h>
// static void *keep(size_t n) { return malloc(n); }  // C-KEEP
import "C"

import "unsafe"

// Leak allocates n bytes in C and never frees them.
func Leak(n int) unsafe.Pointer {
	return C.keep(C.size_t(n)) // GO-CALLS-KEEP
}

// Balanced frees what it allocates.
func Balanced(n int) {
	C.free(C.keep(C.size_t(n)))
}
