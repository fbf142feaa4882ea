// Seed test 3: a leak on a thread that C creates with pthread_create. The
// thread is joined so that it runs before the program exits.
package main

// #include <stdio.h>
// #include <stdlib.h>
// #include <string.h>
// #include <pthread.h>
//
// static void myprint(char* s) {
//   printf("%s\n", s);
// }
//
// void * volatile keep;
// static void *f1(void *q) {
//   void *p = malloc(128 * 1024 * 1024); // CLEAK: 134217728 bytes
//   memset(p, '0', 128 * 1024 * 1024);
//   keep = p;
//   return NULL;
// }
//
// static void f2() {
//   pthread_t t;
//   pthread_create(&t, NULL, f1, NULL);
//   pthread_join(t, NULL);
// }
import "C"

func main() {
	cs := C.CString("Hello from stdio") // LEAK: 17 bytes
	C.myprint(cs)
	C.f2()
}
