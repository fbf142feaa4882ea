// Frees everything it allocates through cgo: must report no leak.
package main

// #include <stdlib.h>
// #include <string.h>
//
// static char *dup_upper(const char *s) {
//   size_t n = strlen(s);
//   char *out = malloc(n + 1);
//   for (size_t i = 0; i <= n; i++) out[i] = (s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 : s[i];
//   return out;
// }
// static void *grow(void *p, size_t n) { return realloc(p, n); }
// static void *zeroed(size_t n) { return calloc(n, 1); }
// static void *aligned(size_t n) { void *p = NULL; posix_memalign(&p, 64, n); return p; }
import "C"

import (
	"fmt"
	"unsafe"
)

func main() {
	total := 0
	for i := 0; i < 1000; i++ {
		cs := C.CString(fmt.Sprintf("item %d", i))
		up := C.dup_upper(cs)
		total += len(C.GoString(up))
		C.free(unsafe.Pointer(up))
		C.free(unsafe.Pointer(cs))

		b := C.CBytes([]byte{1, 2, 3, 4})
		b = C.grow(b, 4096)
		C.free(b)

		z := C.zeroed(100)
		C.free(z)
		a := C.aligned(256)
		C.free(a)
		m := C.malloc(32)
		C.free(m)
	}
	fmt.Println("total", total)
}
