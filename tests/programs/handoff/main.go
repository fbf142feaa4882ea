// C threads hand blocks to each other: producers allocate, consumers free
// what they receive through a queue, so blocks are freed on another thread
// than the one that allocated them, and freed addresses come back to other
// threads' mallocs. Threads start and end in waves (more threads over the
// run than the agent has lanes). One site leaks a known number of blocks.
package main

// #include <pthread.h>
// #include <sched.h>
// #include <stdatomic.h>
// #include <stdlib.h>
// #include <string.h>
//
// #define QCAP 256
// typedef struct {
//   _Atomic size_t head, tail;
//   void *slots[QCAP];
// } queue;
// typedef struct { queue q; int items; } pair;
//
// static void *kept[1 << 16];
// static atomic_int nkept;
//
// static __attribute__((noinline)) void *make_block(size_t n) {
//   void *p = malloc(n);
//   memset(p, 1, n);
//   return p;
// }
// static __attribute__((noinline)) void *make_kept(size_t n) {
//   void *p = malloc(n); // LEAK: 24 bytes each
//   memset(p, 2, n);
//   return p;
// }
// static void push(queue *q, void *p) {
//   size_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
//   while (h - atomic_load_explicit(&q->tail, memory_order_acquire) == QCAP) sched_yield();
//   q->slots[h % QCAP] = p;
//   atomic_store_explicit(&q->head, h + 1, memory_order_release);
// }
// static void *pop(queue *q) {
//   size_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
//   while (atomic_load_explicit(&q->head, memory_order_acquire) == t) sched_yield();
//   void *p = q->slots[t % QCAP];
//   atomic_store_explicit(&q->tail, t + 1, memory_order_release);
//   return p;
// }
// static void *producer(void *a) {
//   pair *pr = a;
//   for (int i = 0; i < pr->items; i++) {
//     if (i % 1000 == 999) {
//       int k = atomic_fetch_add(&nkept, 1);
//       kept[k] = make_kept(24);
//       continue;
//     }
//     push(&pr->q, make_block(16 + i % 200));
//   }
//   push(&pr->q, NULL);
//   return NULL;
// }
// static void *consumer(void *a) {
//   pair *pr = a;
//   for (void *p; (p = pop(&pr->q)) != NULL;) free(p);
//   return NULL;
// }
// static int run_handoff(int waves, int pairs, int items) {
//   pair *ps = calloc(pairs, sizeof(pair));
//   pthread_t *ts = calloc(2 * pairs, sizeof(pthread_t));
//   for (int w = 0; w < waves; w++) {
//     for (int i = 0; i < pairs; i++) {
//       ps[i].items = items;
//       pthread_create(&ts[2 * i], NULL, producer, &ps[i]);
//       pthread_create(&ts[2 * i + 1], NULL, consumer, &ps[i]);
//     }
//     for (int i = 0; i < 2 * pairs; i++) pthread_join(ts[i], NULL);
//   }
//   free(ts);
//   free(ps);
//   return atomic_load(&nkept);
// }
import "C"

import (
	"fmt"
	"os"
	"strconv"
)

func main() {
	waves, pairs, items := 6, 3, 20000
	if len(os.Args) > 3 {
		waves, _ = strconv.Atoi(os.Args[1])
		pairs, _ = strconv.Atoi(os.Args[2])
		items, _ = strconv.Atoi(os.Args[3])
	}
	fmt.Println("leaked", C.run_handoff(C.int(waves), C.int(pairs), C.int(items)))
}
