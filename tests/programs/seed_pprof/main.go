// Seed test 4: the C leaks of test 2 in a program that serves net/http/pprof
// and never exits on its own (pprof cannot see either leak). It listens on a
// loopback port of its own choosing and says READY once it is up.
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

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func main() {
	cs := C.CString("Hello from stdio") // LEAK: 17 bytes
	C.myprint(cs)
	C.f1()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("READY", ln.Addr())
	http.Serve(ln, nil)
}
