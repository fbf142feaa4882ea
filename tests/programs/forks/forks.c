// A C program that forks without exec (as a daemon or a pre-fork server
// does): the child inherits the parent's agent, its mode and its state, and
// starts over as a process of its own (agent.cc, AtForkChild). The child
// frees a block the parent allocated, allocates and frees a thousand blocks
// through every common entry point, and leaks one; the parent leaks one.
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char* volatile keep[2];

__attribute__((noinline)) char* parent_leak(void) {
  char* p = malloc(111);  // LEAK: the parent's
  memset(p, 1, 111);
  return p;
}

__attribute__((noinline)) char* child_leak(void) {
  char* p = malloc(222);  // LEAK: the child's
  memset(p, 2, 222);
  return p;
}

int main(void) {
  char* before = malloc(333);  // freed by both: each has its own copy
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    free(before);
    for (int i = 0; i < 1000; ++i) {
      char* a = malloc(16 + i);
      char* b = calloc(1, 24 + i);
      a = realloc(a, 64 + 2 * i);
      memset(a, 3, 16);
      free(b);
      free(a);
    }
    keep[1] = child_leak();  // CALLS: the child's
    _exit(0);
  }
  keep[0] = parent_leak();  // CALLS: the parent's
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 2;
  free(before);
  return 0;
}
