// An allocator that is not glibc's, linked by tests/programs/nextalloc: the
// agent finds it next after itself, as it finds a shared jemalloc or
// tcmalloc. Every block starts a page of its own with an inaccessible page
// before it, where allocators with guard pages (electric fence, GWP-ASan's
// slots) put theirs: reading just before a block faults. Slow (two system
// calls a block) and small (8192 live blocks): a test's allocator.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define SLOTS 8192

struct block {
  char *p;
  size_t size;  // asked for
};
static struct block blocks[SLOTS];
static int lock;

static void take(void) {
  while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE)) {
  }
}
static void give(void) { __atomic_store_n(&lock, 0, __ATOMIC_RELEASE); }

static size_t pages(size_t size) { return size == 0 ? PAGE : (size + PAGE - 1) / PAGE * PAGE; }

static void *guarded(size_t size) {
  if (size > ((size_t)1 << 40)) {
    errno = ENOMEM;
    return NULL;
  }
  char *m = mmap(NULL, PAGE + pages(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || mprotect(m, PAGE, PROT_NONE) != 0) {
    errno = ENOMEM;
    return NULL;
  }
  take();
  for (int i = 0; i < SLOTS; i++) {
    if (blocks[i].p == NULL) {
      blocks[i].p = m + PAGE;
      blocks[i].size = size;
      give();
      return m + PAGE;
    }
  }
  give();
  munmap(m, PAGE + pages(size));
  errno = ENOMEM;
  return NULL;
}

// The slot of p; aborts for a pointer this allocator did not hand out.
static struct block *find(const void *p) {
  for (int i = 0; i < SLOTS; i++) {
    if (blocks[i].p == p) return &blocks[i];
  }
  abort();
}

void free(void *p) {
  if (p == NULL) return;
  take();
  struct block *b = find(p);
  size_t size = b->size;
  b->p = NULL;
  give();
  munmap((char *)p - PAGE, PAGE + pages(size));
}

void *malloc(size_t size) { return guarded(size); }

void *calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return guarded(total);  // fresh pages are zero
}

size_t malloc_usable_size(void *p) {
  if (p == NULL) return 0;
  take();
  size_t size = find(p)->size;
  give();
  return pages(size);
}

void *realloc(void *old, size_t size) {
  if (old == NULL) return guarded(size);
  if (size == 0) {
    free(old);
    return NULL;
  }
  void *p = guarded(size);
  if (p == NULL) return NULL;
  size_t had = malloc_usable_size(old);
  memcpy(p, old, had < size ? had : size);
  free(old);
  return p;
}

void *reallocarray(void *old, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(old, total);
}

// Alignments up to a page: every block is page-aligned.
void *memalign(size_t align, size_t size) {
  if (align > PAGE) {
    errno = EINVAL;
    return NULL;
  }
  return guarded(size);
}
void *aligned_alloc(size_t align, size_t size) { return memalign(align, size); }
int posix_memalign(void **out, size_t align, size_t size) {
  if (align > PAGE || align % sizeof(void *) != 0 || (align & (align - 1)) != 0) return EINVAL;
  void *p = guarded(size);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}
void *valloc(size_t size) { return guarded(size); }
void *pvalloc(size_t size) { return guarded(pages(size)); }
