// Blocks never freed, told apart by whether the program still pointed to
// them at exit (tests/e2e/run_test.cc, RunTest.LostAndReachableAreToldApart).
package main

/*
#include <stdlib.h>

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
}

// A pointer into a block's middle, in a C global: still reachable.
char* volatile middle;
static void keep_middle(void) {
	char* p = malloc(64); // INTERIOR: 64 bytes
	middle = p + 40;
}
*/
import "C"

import "unsafe"

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
}
