#include "client/ring_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/testing/test_util.h"

namespace cgoheap::client {
namespace {

namespace fs = std::filesystem;
using cgoheap::testing::TempDir;

// A launcher in a child process: it makes its ring directory under parent,
// puts a ring in it, says where, and waits to be killed with SIGKILL (no
// destructor runs). Returns the directory.
std::string KilledLauncher(const std::string& parent) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    auto* dir = new RingDir;  // never destroyed: the process is killed
    if (!dir->Create(parent)) _exit(1);
    std::ofstream(dir->path() + "/1234.ring") << std::string(4096, 'r');
    std::string path = dir->path() + "\n";
    (void)!write(fds[1], path.data(), path.size());
    for (;;) pause();
  }
  close(fds[1]);
  std::string path;
  char c;
  while (read(fds[0], &c, 1) == 1 && c != '\n') path += c;
  close(fds[0]);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
  return path;
}

TEST(RingDirTest, ADirectoryIsLockedWhileItsLauncherLivesAndGoesWithIt) {
  TempDir parent;
  std::string path;
  {
    RingDir dir;
    ASSERT_TRUE(dir.Create(parent.path()));
    path = dir.path();
    EXPECT_EQ(fs::path(path).parent_path(), fs::path(parent.path()));
    EXPECT_EQ(fs::path(path).filename().string().rfind("cgoheap-rings-", 0), 0u) << path;
    EXPECT_TRUE(fs::exists(path + "/" + RingDir::kLockName));
    EXPECT_FALSE(fs::exists(path + "/.staged-lock"));
    // Another launcher's sweep leaves a live one's directory alone.
    EXPECT_EQ(RingDir::SweepAbandoned(parent.path()), 0);
    EXPECT_TRUE(fs::exists(path));
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(RingDirTest, AKilledLaunchersDirectoryIsSweptByTheNext) {
  TempDir parent;
  std::string dead = KilledLauncher(parent.path());
  ASSERT_FALSE(dead.empty());
  ASSERT_TRUE(fs::exists(dead + "/1234.ring"));  // what SIGKILL used to leave behind
  RingDir live;
  ASSERT_TRUE(live.Create(parent.path()));
  EXPECT_EQ(RingDir::SweepAbandoned(parent.path()), 1);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live.path() + "/" + RingDir::kLockName));
  EXPECT_EQ(RingDir::SweepAbandoned(parent.path()), 0);
}

TEST(RingDirTest, OnlyLockedDirectoriesOfOurOwnAreSweptAndNoLinkIsFollowed) {
  TempDir parent, elsewhere;
  const std::string& p = parent.path();
  // Without a lock file: a launcher between mkdtemp and its lock, or an
  // older cgoheap's directory.
  fs::create_directory(p + "/cgoheap-rings-nolock");
  // Not ours by name.
  fs::create_directory(p + "/cgoheap-data-abcdef");
  std::ofstream(p + "/cgoheap-data-abcdef/" + RingDir::kLockName) << "";
  // A link to a dead launcher's directory somewhere else: not followed.
  std::string dead = KilledLauncher(elsewhere.path());
  fs::create_directory_symlink(dead, p + "/cgoheap-rings-link");
  // A lock file that is a link: not followed either.
  fs::create_directory(p + "/cgoheap-rings-linkedlock");
  fs::create_symlink(dead + "/" + RingDir::kLockName,
                     p + "/cgoheap-rings-linkedlock/" + RingDir::kLockName);
  EXPECT_EQ(RingDir::SweepAbandoned(p), 0);
  EXPECT_TRUE(fs::exists(p + "/cgoheap-rings-nolock"));
  EXPECT_TRUE(fs::exists(p + "/cgoheap-data-abcdef"));
  EXPECT_TRUE(fs::exists(p + "/cgoheap-rings-linkedlock"));
  EXPECT_TRUE(fs::is_symlink(p + "/cgoheap-rings-link"));
  EXPECT_TRUE(fs::exists(dead + "/1234.ring"));
  // Another user's: left alone (only root can make one here).
  if (geteuid() == 0) {
    std::string theirs = KilledLauncher(p);
    ASSERT_EQ(chown(theirs.c_str(), 65534, 65534), 0) << strerror(errno);
    EXPECT_EQ(RingDir::SweepAbandoned(p), 0);
    EXPECT_TRUE(fs::exists(theirs + "/1234.ring"));
    ASSERT_EQ(chown(theirs.c_str(), 0, 0), 0);
    EXPECT_EQ(RingDir::SweepAbandoned(p), 1);
    EXPECT_FALSE(fs::exists(theirs));
  }
  EXPECT_EQ(RingDir::SweepAbandoned(elsewhere.path()), 1);
  EXPECT_FALSE(fs::exists(dead));
}

TEST(RingDirTest, AParentThatCannotHoldItSaysWhy) {
  TempDir parent;
  RingDir dir;
  errno = 0;
  EXPECT_FALSE(dir.Create(parent.path() + "/missing"));
  EXPECT_EQ(errno, ENOENT);
  EXPECT_TRUE(dir.path().empty());
  EXPECT_EQ(RingDir::SweepAbandoned(parent.path() + "/missing"), 0);
}

// Every way a ring comes or goes is seen, and a quiet directory is not
// read again until the rescan is due.
TEST(DirChangesTest, SaysYesForEveryEntryMadeRenamedOrRemovedAndNoOtherwise) {
  TempDir dir;
  const absl::Time t0 = absl::Now();
  const absl::Duration rescan = absl::Hours(1);  // out of the way here
  DirChanges changes(dir.path(), rescan);
  EXPECT_TRUE(changes.Changed(t0));  // the first ask
  ASSERT_TRUE(changes.watching()) << "inotify is needed by this test";
  EXPECT_FALSE(changes.Changed(t0));
  EXPECT_FALSE(changes.Changed(t0));

  const std::string tmp = dir.path() + "/1-2.tmp", ring = dir.path() + "/1-2.ring";
  std::ofstream(tmp) << "header";  // as the agent makes its ring: a file...
  EXPECT_TRUE(changes.Changed(t0));
  EXPECT_FALSE(changes.Changed(t0));
  ASSERT_EQ(rename(tmp.c_str(), ring.c_str()), 0);  // ...published by a rename
  EXPECT_TRUE(changes.Changed(t0));
  EXPECT_FALSE(changes.Changed(t0));
  std::ofstream(ring, std::ios::app) << "records";  // what a ring's writes do: nothing
  EXPECT_FALSE(changes.Changed(t0));
  ASSERT_EQ(unlink(ring.c_str()), 0);  // the forwarder retires a ring
  EXPECT_TRUE(changes.Changed(t0));
  EXPECT_FALSE(changes.Changed(t0));
  // A rename into the directory from elsewhere is an entry made.
  std::ofstream(dir.path() + "/../outside-" + std::to_string(getpid())) << "x";
  ASSERT_EQ(rename((dir.path() + "/../outside-" + std::to_string(getpid())).c_str(),
                   (dir.path() + "/3-4.ring").c_str()),
            0);
  EXPECT_TRUE(changes.Changed(t0));
  EXPECT_FALSE(changes.Changed(t0));
  // The rescan comes whatever inotify says.
  EXPECT_TRUE(changes.Changed(t0 + rescan));
  EXPECT_FALSE(changes.Changed(t0 + rescan));
}

// A directory that is not there yet (cgoheap forward may start before any
// agent makes it), or that goes and comes back: asked each time until a
// watch holds, and the ask that places it says yes.
TEST(DirChangesTest, ADirectoryThatComesLaterOrIsMadeAgainIsWatchedWhenItIsThere) {
  TempDir parent;
  const std::string dir = parent.path() + "/rings";
  const absl::Time t0 = absl::Now();
  DirChanges changes(dir, absl::Hours(1));
  EXPECT_TRUE(changes.Changed(t0));
  EXPECT_FALSE(changes.watching());
  EXPECT_TRUE(changes.Changed(t0));  // no watch: every ask is a yes
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  std::ofstream(dir + "/early.ring") << "x";  // made before the watch is placed
  EXPECT_TRUE(changes.Changed(t0));           // the ask that places it
  EXPECT_TRUE(changes.watching());
  EXPECT_FALSE(changes.Changed(t0));

  fs::remove_all(dir);
  EXPECT_TRUE(changes.Changed(t0));  // the entry and the directory went
  EXPECT_FALSE(changes.watching());
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  EXPECT_TRUE(changes.Changed(t0));
  EXPECT_TRUE(changes.watching());
  EXPECT_FALSE(changes.Changed(t0));
  std::ofstream(dir + "/late.ring") << "x";
  EXPECT_TRUE(changes.Changed(t0));  // the new directory's entries are seen
}

}  // namespace
}  // namespace cgoheap::client
