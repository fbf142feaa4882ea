// Allocations no allocator can give, as a bug makes them: malloc of a
// negative length, a calloc whose product overflows, a realloc to a negative
// length. Each fails; the thread's next allocations must still be recorded
// (the agent's sampling countdown once wrapped round on such a size and left
// them unrecorded: "no leaks" for the first thread's 100-byte leak). Each
// case runs on a thread of its own, so that one's effect on the countdown
// cannot hide another's.
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

void* volatile keep[3];
volatile long negative = -4096;  // volatile: the compiler must not see the size

static void* NegativeMalloc(void* arg) {
  (void)arg;
  if (malloc((size_t)negative) != NULL) return NULL;
  keep[0] = malloc(100);  // LEAK: after malloc(-4096)
  return keep[0];
}

static void* OverflowedCalloc(void* arg) {
  (void)arg;
  if (calloc(3, SIZE_MAX / 2 + 2) != NULL) return NULL;  // the product wraps to 2^63 + 3
  keep[1] = malloc(200);  // LEAK: after the overflowed calloc
  return keep[1];
}

static void* NegativeRealloc(void* arg) {
  (void)arg;
  char* block = malloc(16);
  if (realloc(block, (size_t)negative) != NULL) return NULL;  // fails: block stays
  free(block);
  keep[2] = malloc(300);  // LEAK: after realloc(-4096)
  return keep[2];
}

int main(void) {
  void* (*cases[])(void*) = {NegativeMalloc, OverflowedCalloc, NegativeRealloc};
  for (int i = 0; i < 3; ++i) {
    pthread_t t;
    void* result = NULL;
    if (pthread_create(&t, NULL, cases[i], NULL) != 0 || pthread_join(t, &result) != 0) return 2;
    if (result == NULL) return 1;
  }
  return 0;
}
