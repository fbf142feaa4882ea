// The directory `cgoheap run` gives its program's rings, and what becomes of
// it when the launcher cannot clean up after itself.
//
// The rings live in memory (/dev/shm) when there is one: a launcher killed
// with SIGKILL (the OOM killer, `kill -9`, a CI job's timeout) used to leave
// its directory there, its sparse rings holding memory until the next
// reboot. So the launcher holds an flock on a file in its directory for as
// long as it lives, and every launcher, when it starts, removes the
// directories beside its own whose lock it can take: their owner is gone.
//
// flock, not a pid: a pid can be reused, and launchers in containers that
// share one /dev/shm (a pod's emptyDir) see different pids for the same
// process; a lock belongs to an open file and goes with its last holder,
// however that holder ends.
//
// A program still running in a swept directory keeps the rings it has
// mapped (they go when it exits); only its forwarder, already dead, would
// have read them.
#pragma once

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cgoheap::client {

class RingDir {
 public:
  RingDir() = default;
  RingDir(const RingDir&) = delete;  // one owner removes it and lets go of the lock
  RingDir& operator=(const RingDir&) = delete;
  // Makes PARENT/cgoheap-rings-XXXXXX and locks it. Returns false (errno
  // set) when it could not.
  bool Create(const std::string& parent);
  // Removes the directory and everything in it, and lets go of the lock.
  ~RingDir();
  const std::string& path() const { return path_; }

  // Removes each PARENT/cgoheap-rings-* directory owned by this user whose
  // lock no process holds. Directories without a lock file (a launcher in
  // its first microseconds, or one of an older cgoheap) are left alone.
  // Returns how many it removed.
  static int SweepAbandoned(const std::string& parent);

  // The lock file's name inside the directory. The forwarder reads only
  // files named *.ring there.
  static constexpr const char* kLockName = "launcher.lock";

 private:
  std::string path_;
  int lock_fd_ = -1;
};

// Whether a directory's entries may have changed since it was last asked,
// learnt from inotify: asked when nothing happened, it costs one read(2)
// instead of reading the directory (open, fstat, getdents, close: a quarter
// of an idle launcher's CPU at 20 polls a second). It says yes the first
// time, after any entry was created, renamed or removed, when events were
// lost (the queue overflowed), once every `rescan` whatever inotify says
// (a file system whose changes inotify does not see: a network one), and
// every time it has no watch (inotify out of instances or watches, or a
// directory that does not exist yet: the watch is tried again at each ask,
// and the ask that places it says yes, so nothing made before it is missed).
class DirChanges {
 public:
  explicit DirChanges(std::string dir, absl::Duration rescan = absl::Seconds(1));
  DirChanges(const DirChanges&) = delete;
  DirChanges& operator=(const DirChanges&) = delete;
  ~DirChanges();
  bool Changed() { return Changed(absl::Now()); }
  bool Changed(absl::Time now);  // for tests
  // Whether inotify watches the directory now (for tests).
  bool watching() const { return wd_ >= 0; }
  // Readable when an entry came or went since the last ask (poll(2) on it
  // to wake then); -1 without inotify.
  int fd() const { return fd_; }

 private:
  std::string dir_;
  absl::Duration rescan_;
  absl::Time last_yes_ = absl::InfinitePast();
  int fd_ = -1;  // inotify instance; -1 when none could be made
  int wd_ = -1;  // the directory's watch; -1 when none
};

}  // namespace cgoheap::client
