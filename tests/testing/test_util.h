// Helpers for cgoheap's tests: running binaries, temporary directories,
// reading JSON documents, finding marked lines in test program sources, and a
// cgoheapd started on a free loopback port.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include <google/protobuf/struct.pb.h>

namespace cgoheap::testing {

std::string BinDir();
std::string ProgramsDir();  // built Go test programs
std::string ProgramsSrc();  // their sources
// A test program built with the default (newest) Go release.
std::string Program(const std::string& name);
std::string ProgramSource(const std::string& name);

// The Go releases the machine has ("1.19", ..., "1.27"), oldest first, each
// of which built the matrix's programs (tests/CMakeLists.txt).
std::vector<std::string> GoReleases();
std::string DefaultGoRelease();
// A test program built with Go release `release`.
std::string ProgramFor(const std::string& release, const std::string& name);
// "go1_22": a release as a test name suffix.
std::string GoTestSuffix(const std::string& release);

std::string ReadFile(const std::string& path);
// 1-based line of the first line containing marker; fails the test if none.
int LineOf(const std::string& path, const std::string& marker);

// A directory removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;  // 128+signal when killed
  std::string out, err;
};

// Runs argv with extra environment entries ("K=V"), capturing stdout and
// stderr, killing it after timeout.
RunResult RunProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
              std::chrono::seconds timeout = std::chrono::seconds(120));

// Starts argv in the background as the leader of a process group of its own
// (so StopGroup reaches its children too), stdout to stdout_path, stderr
// discarded.
pid_t SpawnBackground(const std::vector<std::string>& argv,
                      const std::string& stdout_path = "/dev/null");
// Sends sig to the group and waits for its leader; returns its exit code
// (128+signal when killed).
int StopGroup(pid_t pid, int sig);

google::protobuf::Value ParseJson(const std::string& text);
// A member of a JSON object; null when absent.
const google::protobuf::Value& Field(const google::protobuf::Value& v, const std::string& name);

// Runs the cgoheap CLI with args.
RunResult Cli(const std::vector<std::string>& args);

// A cgoheapd child process on 127.0.0.1:<free port>, stopped (SIGTERM) when
// the object dies.
class Cgoheapd {
 public:
  // env: extra environment entries ("K=V") for the server process.
  explicit Cgoheapd(const std::string& data_dir, const std::vector<std::string>& extra = {},
                    const std::vector<std::string>& env = {});
  ~Cgoheapd();
  const std::string& address() const { return address_; }
  // With --metrics=HOST:0 among the flags: where /metrics was bound.
  const std::string& metrics_address() const { return metrics_address_; }
  pid_t pid() const { return pid_; }
  // Stops it and waits; returns the exit code (128+signal if killed).
  int Stop(int signal = 15);

 private:
  pid_t pid_ = -1;
  std::string address_;
  std::string metrics_address_;
};

}  // namespace cgoheap::testing
