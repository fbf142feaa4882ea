// A C program that loads a Go library with dlopen (argv[1]), as Python's
// ctypes does, and calls into it.
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: golib_dlopen LIBRARY\n");
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "golib_dlopen: %s\n", dlerror());
    return 1;
  }
  void (*go_leak)(int) = (void (*)(int))dlsym(lib, "GoLeak");
  if (go_leak == NULL) {
    fprintf(stderr, "golib_dlopen: %s\n", dlerror());
    return 1;
  }
  go_leak(2);  // DLOPEN-CALLS-GO
  puts("dlopen host done");
  return 0;
}
