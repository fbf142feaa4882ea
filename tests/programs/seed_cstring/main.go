// Seed test 1: a C.CString that is never freed.
package main

// #include <stdio.h>
// #include <stdlib.h>
//
// static void myprint(char* s) {
//   printf("%s\n", s);
// }
import "C"

func main() {
	cs := C.CString("Hello from stdio") // LEAK: 17 bytes
	C.myprint(cs)
}
