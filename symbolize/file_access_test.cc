#include "symbolize/file_access.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "symbolize/symbolizer.h"
#include "tests/testing/test_util.h"

namespace cgoheap {
namespace {

void Write(const std::string& path, const std::string& text, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  ASSERT_EQ(chmod(path.c_str(), mode), 0);
}

// Runs f in a child process; true when it finished within the limit (a test
// of "never blocks" must fail, not hang, when it does block).
template <typename F>
bool FinishesWithin(F f, std::chrono::seconds limit) {
  pid_t pid = fork();
  if (pid == 0) {
    f();
    _exit(0);
  }
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(FileAccessTest, OnlyRegularFilesReachedWithoutSymlinksAreOpened) {
  testing::TempDir dir;
  std::string file = dir.path() + "/lib.so", link = dir.path() + "/link.so",
              fifo = dir.path() + "/fifo.so", sub = dir.path() + "/sub";
  Write(file, "not really ELF", 0644);
  ASSERT_EQ(symlink(file.c_str(), link.c_str()), 0);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
  ASSERT_EQ(symlink(dir.path().c_str(), (sub + "/up").c_str()), 0);

  int fd = OpenRegularFile(file.c_str());
  EXPECT_GE(fd, 0);
  close(fd);
  EXPECT_EQ(OpenRegularFile(link.c_str()), -1);  // the last component
  EXPECT_EQ(errno, ELOOP);
  EXPECT_EQ(OpenRegularFile((sub + "/up/lib.so").c_str()), -1);  // one on the way
  EXPECT_EQ(OpenRegularFile(sub.c_str()), -1);  // a directory
  EXPECT_EQ(errno, EINVAL);
  // A FIFO is refused at once: nobody will ever write to it.
  EXPECT_TRUE(FinishesWithin([&] { _exit(OpenRegularFile(fifo.c_str()) == -1 ? 0 : 1); },
                             std::chrono::seconds(10)));
  // And a process whose mappings name one is symbolized without blocking.
  EXPECT_TRUE(FinishesWithin(
      [&] {
        ObjectCache objects;
        ProcessSymbolizer sym(&objects);
        sym.SetMappings("1000 2000 0 " + fifo + "\n");
        sym.OpenAll();
        std::vector<SymbolizedFrame> out;
        sym.Symbolize(0x1500, true, &out);
      },
      std::chrono::seconds(10)));
}

TEST(FileAccessTest, FilesAreReadWithTheTargetsRightsOnly) {
  testing::TempDir dir;
  std::string open_file = dir.path() + "/public.so", secret = dir.path() + "/secret.so",
              locked = dir.path() + "/locked", behind = dir.path() + "/locked/lib.so";
  Write(open_file, "x", 0644);
  Write(secret, "x", 0600);
  ASSERT_EQ(mkdir(locked.c_str(), 0700), 0);
  Write(behind, "x", 0644);
  const uid_t self = geteuid();
  const gid_t group = getegid();
  const uid_t other = self == 4242 ? 4243 : 4242;
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);

  EXPECT_TRUE(MayRead(open_file, other, other));
  EXPECT_FALSE(MayRead(secret, other, other));
  EXPECT_TRUE(MayRead(secret, self, group));
  EXPECT_FALSE(MayRead(behind, other, other));  // a directory it cannot search
  EXPECT_TRUE(MayRead(behind, self, group));
  EXPECT_TRUE(MayRead(secret, 0, 0));
  EXPECT_FALSE(MayRead("relative/path", self, group));

  // A process of another user whose mappings claim the secret: not opened.
  ObjectCache objects;
  ProcessSymbolizer sym(&objects);
  sym.ReadAs(other, other);
  sym.SetMappings("1000 2000 0 " + secret + "\n3000 4000 0 " + open_file + "\n");
  EXPECT_FALSE(sym.Covers(0x1500));
  EXPECT_TRUE(sym.Covers(0x3500));
  EXPECT_FALSE(sym.MayOpen(secret));
}

}  // namespace
}  // namespace cgoheap
