// C code that calls back into Go (the functions main.go exports).
#include <pthread.h>
#include <stddef.h>

#include "_cgo_export.h"

void c_loop(int n) {
  for (int i = 0; i < n; ++i) {
    goLeak(i);  // C-LOOP-CALLS
  }
}

void c_inner(int n) {
  for (int i = 0; i < n; ++i) {
    goLeakDeep(i);  // C-INNER-CALLS
  }
}

volatile int outer_calls;

void c_outer(int n) {
  goMiddle(n);  // C-OUTER-CALLS
  outer_calls++;  // not a tail call: c_outer keeps its frame
}

// One request of a service that never exits: C calls back into Go.
void c_request(int i) {
  goServe(i);  // C-REQUEST-CALLS
  outer_calls++;
}

static void *thread_main(void *arg) {
  int n = *(int *)arg;
  for (int i = 0; i < n; ++i) {
    goLeakFromCThread(i);  // C-THREAD-CALLS
  }
  return NULL;
}

void c_thread(int n) {
  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, &n) == 0) pthread_join(t, NULL);
}
