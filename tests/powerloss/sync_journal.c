// LD_PRELOAD shim for power-loss tests: after every successful fsync or
// fdatasync, appends "INODE SIZE" of the file to $CGOHEAP_SYNC_JOURNAL. What
// a power loss keeps of a file is what was last synced; the test truncates
// each write-ahead log to that size after killing the server, and sees what
// the server still has when it starts again.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void Record(int fd) {
  const char* journal = getenv("CGOHEAP_SYNC_JOURNAL");
  struct stat st;
  if (journal == NULL || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  char line[64];
  int n = snprintf(line, sizeof line, "%llu %lld\n", (unsigned long long)st.st_ino,
                   (long long)st.st_size);
  int out = open(journal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out < 0) return;
  if (write(out, line, (size_t)n) != n) {
    // the test then sees less synced than there was: it fails, never passes wrongly
  }
  close(out);
}

int fsync(int fd) {
  static int (*real)(int);
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  int rc = real(fd);
  if (rc == 0) Record(fd);
  return rc;
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  int rc = real(fd);
  if (rc == 0) Record(fd);
  return rc;
}
