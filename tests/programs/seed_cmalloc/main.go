// Seed test 2: C code that mallocs 128 MiB and never frees it. The pointer is
// stored in a volatile global: without it gcc -O2 removes the allocation.
package main

// #include <stdio.h>
// #include <stdlib.h>
// #include <string.h>
//
// static void myprint(char* s) {
//   printf("%s\n", s);
// }
//
// void * volatile keep;
// static void f1() {
//   void *p = malloc(128 * 1024 * 1024); // CLEAK: 134217728 bytes
//   memset(p, '0', 128 * 1024 * 1024);
//   keep = p;
// }
import "C"

func main() {
	cs := C.CString("Hello from stdio") // LEAK: 17 bytes
	C.myprint(cs)
	C.f1() // CALLS-F1
}
