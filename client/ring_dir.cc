#include "client/ring_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <vector>

namespace cgoheap::client {
namespace {

constexpr std::string_view kPrefix = "cgoheap-rings-";

}  // namespace

bool RingDir::Create(const std::string& parent) {
  std::string templ = parent + "/" + std::string(kPrefix) + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back(0);
  if (mkdtemp(buf.data()) == nullptr) return false;
  std::string dir(buf.data());
  // The lock file appears under its name only once it is locked: a sweep
  // that finds it can always trust that the lock means a live launcher. (A
  // sweep that runs between mkdtemp and the rename finds no lock file and
  // leaves the directory alone.)
  std::string staged = dir + "/.staged-lock", final_name = dir + "/" + kLockName;
  int fd = open(staged.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 || flock(fd, LOCK_EX) != 0 || rename(staged.c_str(), final_name.c_str()) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    errno = err;
    return false;
  }
  path_ = std::move(dir);
  lock_fd_ = fd;
  return true;
}

RingDir::~RingDir() {
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  if (lock_fd_ >= 0) close(lock_fd_);  // after the removal: no sweep races it
}

int RingDir::SweepAbandoned(const std::string& parent) {
  DIR* d = opendir(parent.c_str());
  if (d == nullptr) return 0;
  int removed = 0;
  const uid_t me = geteuid();
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name.substr(0, kPrefix.size()) != kPrefix) continue;
    // Our own directories only, and never through a symbolic link: /dev/shm
    // and /tmp are shared with every user.
    int dfd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) continue;
    struct stat st;
    int lfd = -1;
    if (fstat(dfd, &st) == 0 && st.st_uid == me) {
      // (O_NONBLOCK: were it a FIFO, the open must not wait for a writer.)
      lfd = openat(dfd, kLockName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    }
    close(dfd);
    if (lfd < 0) continue;
    // Held until the directory is gone, so that two sweeps never remove it
    // together and no launcher's own cleanup races this one.
    // A lock file with no links left was removed by a sweep before us.
    struct stat lst;
    if (flock(lfd, LOCK_EX | LOCK_NB) == 0 && fstat(lfd, &lst) == 0 && lst.st_nlink > 0) {
      std::error_code ec;
      if (std::filesystem::remove_all(parent + "/" + e->d_name, ec) > 0 && !ec) ++removed;
    }
    close(lfd);
  }
  closedir(d);
  return removed;
}

DirChanges::DirChanges(std::string dir, absl::Duration rescan)
    : dir_(std::move(dir)), rescan_(rescan), fd_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {}

DirChanges::~DirChanges() {
  if (fd_ >= 0) close(fd_);
}

bool DirChanges::Changed(absl::Time now) {
  bool changed = now - last_yes_ >= rescan_;
  if (fd_ >= 0 && wd_ < 0) {
    wd_ = inotify_add_watch(fd_, dir_.c_str(),
                            IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF |
                                IN_MOVE_SELF | IN_ONLYDIR);
    changed = true;  // what was made before the watch: read the directory once
  } else if (wd_ >= 0) {
    alignas(inotify_event) char buf[4096];
    for (ssize_t n; (n = read(fd_, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);) {
      if (n < 0) continue;
      changed = true;
      for (ssize_t at = 0; at + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
        // The directory went (or moved: its path is no longer it): its watch
        // is gone too, or means nothing; a new one is tried at the next ask.
        if ((e->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) != 0 && wd_ >= 0) {
          inotify_rm_watch(fd_, wd_);  // (EINVAL once IN_IGNORED came: harmless)
          wd_ = -1;
        }
        at += static_cast<ssize_t>(sizeof(inotify_event)) + e->len;
      }
    }
  } else {
    changed = true;  // no inotify: read the directory each time, as without this class
  }
  if (changed) last_yes_ = now;
  return changed;
}

}  // namespace cgoheap::client
