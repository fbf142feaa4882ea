#include "tests/testing/test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

namespace cgoheap::testing {

std::string BinDir() { return CGOHEAP_BIN_DIR; }
std::string ProgramsDir() { return CGOHEAP_PROGRAMS_DIR; }
std::string ProgramsSrc() { return CGOHEAP_PROGRAMS_SRC; }
std::string Program(const std::string& name) { return ProgramsDir() + "/" + name; }
std::vector<std::string> GoReleases() {
  std::vector<std::string> out;
  std::stringstream in(CGOHEAP_GO_RELEASES);
  for (std::string r; std::getline(in, r, ',');) {
    if (!r.empty()) out.push_back(r);
  }
  return out;
}
std::string DefaultGoRelease() { return CGOHEAP_GO_DEFAULT; }
std::string ProgramFor(const std::string& release, const std::string& name) {
  if (release == DefaultGoRelease()) return Program(name);
  return ProgramsDir() + "/go" + release + "/" + name;
}
std::string GoTestSuffix(const std::string& release) {
  std::string s = "go" + release;
  for (char& c : s) {
    if (c == '.') c = '_';
  }
  return s;
}
std::string ProgramSource(const std::string& name) {
  return ProgramsSrc() + "/" + name + "/main.go";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int LineOf(const std::string& path, const std::string& marker) {
  std::ifstream in(path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find(marker) != std::string::npos) return n;
  }
  ADD_FAILURE() << "no line with '" << marker << "' in " << path;
  return -1;
}

TempDir::TempDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "cgoheap-test-XXXXXX").string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back(0);
  if (mkdtemp(buf.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

namespace {

void DrainInto(int fd, std::string* out) {
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out->append(buf, n);
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, int out_fd,
            int err_fd, bool new_group = false) {
  pid_t pid = fork();
  if (pid == 0) {
    if (new_group) setpgid(0, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

pid_t SpawnBackground(const std::vector<std::string>& argv, const std::string& stdout_path) {
  int out = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = open("/dev/null", O_WRONLY | O_CLOEXEC);
  pid_t pid = Spawn(argv, {}, out, err, /*new_group=*/true);
  close(out);
  close(err);
  return pid;
}

int StopGroup(pid_t pid, int sig) {
  if (pid <= 0) return -1;
  kill(-pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  return ExitCode(status);
}

RunResult RunProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
              std::chrono::seconds timeout) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return {};
  pid_t pid = Spawn(argv, env, out[1], err[1]);
  close(out[1]);
  close(err[1]);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  RunResult r;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now())
                                  .count());
    if (ms <= 0) {
      kill(pid, SIGKILL);
      ADD_FAILURE() << argv[0] << " timed out";
      break;
    }
    poll(fds, 2, ms);
    if (fds[0].revents) {
      size_t before = r.out.size();
      DrainInto(out[0], &r.out);
      if (r.out.size() == before && (fds[0].revents & POLLHUP)) out_open = false;
    }
    if (fds[1].revents) {
      size_t before = r.err.size();
      DrainInto(err[0], &r.err);
      if (r.err.size() == before && (fds[1].revents & POLLHUP)) err_open = false;
    }
  }
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = ExitCode(status);
  return r;
}

const google::protobuf::Value& Field(const google::protobuf::Value& v, const std::string& name) {
  static const google::protobuf::Value kNull;
  auto& f = v.struct_value().fields();
  auto it = f.find(name);
  return it == f.end() ? kNull : it->second;
}

RunResult Cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinDir() + "/cgoheap"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

google::protobuf::Value ParseJson(const std::string& text) {
  google::protobuf::Value v;
  auto st = google::protobuf::util::JsonStringToMessage(text, &v);
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << text;
  return v;
}

Cgoheapd::Cgoheapd(const std::string& data_dir, const std::vector<std::string>& extra,
                   const std::vector<std::string>& env) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return;
  std::vector<std::string> argv = {BinDir() + "/cgoheapd", "--listen=127.0.0.1:0",
                                   "--data=" + data_dir};
  argv.insert(argv.end(), extra.begin(), extra.end());
  pid_ = Spawn(argv, env, out[1], 2);
  close(out[1]);
  // "cgoheapd: listening on 127.0.0.1:PORT, ..."
  std::string line;
  char c;
  while (read(out[0], &c, 1) == 1 && c != '\n') line.push_back(c);
  close(out[0]);
  const std::string key = "listening on ";
  size_t at = line.find(key);
  if (at == std::string::npos) {
    ADD_FAILURE() << "cgoheapd did not start: '" << line << "'";
    return;
  }
  address_ = line.substr(at + key.size());
  address_ = address_.substr(0, address_.find_first_of(", "));
  const std::string mkey = "profiles on ";
  if (size_t m = line.find(mkey); m != std::string::npos) {
    metrics_address_ = line.substr(m + mkey.size());  // http(s)://HOST:PORT/, data in ...
    metrics_address_ = metrics_address_.substr(metrics_address_.find("://") + 3);
    metrics_address_ = metrics_address_.substr(0, metrics_address_.find('/'));
  }
}

int Cgoheapd::Stop(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return ExitCode(status);
}

Cgoheapd::~Cgoheapd() { Stop(); }

}  // namespace cgoheap::testing
