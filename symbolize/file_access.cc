#include "symbolize/file_access.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace cgoheap {

std::atomic<uint64_t> g_zeroed_file_pages{0};

namespace {

bool Permits(const struct stat& st, uid_t uid, gid_t gid, mode_t user, mode_t group,
             mode_t other) {
  if (uid == 0) return true;
  if (st.st_uid == uid) return (st.st_mode & user) != 0;
  if (st.st_gid == gid) return (st.st_mode & group) != 0;
  return (st.st_mode & other) != 0;
}

}  // namespace

int OpenRegularFile(const char* path) {
  const int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
  open_how how{};
  how.flags = flags;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how));
  if (fd < 0 && errno == ENOSYS) {
    // Kernels before 5.6: at least the last component is never a symlink.
    fd = open(path, flags | O_NOFOLLOW);
  }
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    errno = EINVAL;
    return -1;
  }
  return fd;
}

bool MayRead(const std::string& path, uid_t uid, gid_t gid) {
  if (path.empty() || path[0] != '/') return false;
  struct stat st;
  // Every directory on the way: search permission.
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
        !Permits(st, uid, gid, S_IXUSR, S_IXGRP, S_IXOTH)) {
      return false;
    }
  }
  if (lstat("/", &st) != 0 || !Permits(st, uid, gid, S_IXUSR, S_IXGRP, S_IXOTH)) return false;
  return lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         Permits(st, uid, gid, S_IRUSR, S_IRGRP, S_IROTH);
}

}  // namespace cgoheap
