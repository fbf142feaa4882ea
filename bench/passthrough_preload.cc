// The floor under any LD_PRELOAD allocation interposer, for bench/run.sh: a
// library whose malloc, calloc, realloc and free each only jump to glibc's
// (__libc_malloc and the others). Preloaded into the churn loop beside the
// agent, it shows what the interposition costs by itself, with no
// instruction of the agent's: one more jump per allocator call, the
// program's calls going through one more object. Never installed; glibc
// only (its __libc_* entry points).
#include <cstddef>

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t n, size_t size);
void* __libc_realloc(void* p, size_t size);
void __libc_free(void* p);

__attribute__((visibility("default"))) void* malloc(size_t size) { return __libc_malloc(size); }
__attribute__((visibility("default"))) void* calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
__attribute__((visibility("default"))) void* realloc(void* p, size_t size) { return __libc_realloc(p, size); }
__attribute__((visibility("default"))) void free(void* p) { __libc_free(p); }
}
