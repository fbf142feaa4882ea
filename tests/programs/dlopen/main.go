// Loads a C library with dlopen (after start-up), leaks a block allocated in
// it, and exits at once: the report must still name the library's function
// and line, although the process is gone before the forwarder symbolizes.
package main

// #cgo LDFLAGS: -ldl
// #include <dlfcn.h>
// #include <stdlib.h>
//
// typedef void *(*make_fn)(size_t);
// static void *call_make(const char *path, size_t n) {
//   void *h = dlopen(path, RTLD_NOW);
//   if (h == NULL) return NULL;
//   make_fn f = (make_fn)dlsym(h, "leaklib_make");
//   return f != NULL ? f(n) : NULL;
// }
import "C"

import (
	"fmt"
	"os"
	"unsafe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dlopen LIBRARY.so")
		os.Exit(2)
	}
	path := C.CString(os.Args[1])
	p := C.call_make(path, 40)
	C.free(unsafe.Pointer(path))
	if p == nil {
		fmt.Println("dlopen failed")
		os.Exit(1)
	}
	fmt.Println("leaked 40")
}
