// An allocator of the program's own, as a statically linked jemalloc,
// tcmalloc or mimalloc is: the executable defines malloc, free, calloc and
// realloc, and symbol lookup finds them before any preloaded library's. (It
// hands the work to glibc's allocator under its internal names.)
#include <stddef.h>

extern void* __libc_malloc(size_t);
extern void __libc_free(void*);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);

void* malloc(size_t n) { return __libc_malloc(n); }
void free(void* p) { __libc_free(p); }
void* calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
void* realloc(void* p, size_t n) { return __libc_realloc(p, n); }
