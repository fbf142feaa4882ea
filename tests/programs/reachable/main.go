// Blocks never freed, told apart by whether the program still pointed to
// them at exit (tests/e2e/run_test.cc, RunTest.LostAndReachableAreToldApart).
//
// With the argument "parked", the main goroutine is locked to the main
// thread, whose stack its cgo calls then run on, and the process is ended by
// another thread while the main thread waits in a C call: its frames then
// hold stale copies of what the C calls before left there (as a Go
// program's main thread waiting in the scheduler does, now and then).
package main

/*
#include <stdlib.h>
#include <unistd.h>

struct node {
	struct node* next;
	char pad[8];
};

// A cache in a C global: still reachable at exit.
struct node* volatile cache;
static void fill_cache(int n) {
	for (int i = 0; i < n; i++) {
		struct node* e = malloc(sizeof *e); // REACHABLE: 3 x 16 bytes
		e->next = cache;
		cache = e;
	}
}

// A list whose head is dropped: the head and the nodes only it points to
// are all lost.
static void drop_list(int n) {
	struct node* head = NULL;
	for (int i = 0; i < n; i++) {
		struct node* e = malloc(sizeof *e); // LOST-LIST: 4 x 16 bytes
		e->next = head;
		head = e;
	}
	__asm__ volatile("" : : "r"(head) : "memory");  // built, then forgotten
	// Copies of the head, left on the stack when this returns.
	void* volatile copies[512];
	for (int i = 0; i < 512; i++) copies[i] = head;
}

// A pointer into a block's middle, in a C global: still reachable.
char* volatile middle;
static void keep_middle(void) {
	char* p = malloc(64); // INTERIOR: 64 bytes
	middle = p + 40;
}

// Waits on a frame whose buffer is never written (it holds what the calls
// before left on the stack), once it has said so on ready.
static void wait_in_c(int ready) {
	volatile char unwritten[8192];
	__asm__ volatile("" : : "r"(unwritten) : "memory");
	if (write(ready, "", 1) == 1) {
		pause();
	}
}
*/
import "C"

import (
	"os"
	"runtime"
	"unsafe"
)

var parked = len(os.Args) > 1 && os.Args[1] == "parked"

func init() {
	if parked {
		runtime.LockOSThread() // main runs on the main thread
	}
}

// A C pointer kept in a Go global: still reachable.
var kept unsafe.Pointer

func main() {
	C.fill_cache(3)
	C.drop_list(4)
	C.keep_middle()
	kept = unsafe.Pointer(C.CString("kept by Go")) // GO-GLOBAL: 11 bytes
	for i := 0; i < 5; i++ {
		s := C.CString("lost") // LOST-GO: 5 x 5 bytes
		_ = s
	}
	if parked {
		r, w, err := os.Pipe()
		if err != nil {
			panic(err)
		}
		go func() {
			r.Read(make([]byte, 1))
			os.Exit(0)
		}()
		C.wait_in_c(C.int(w.Fd()))
	}
}
