// cgoheap run: start a program under the agent, forward its events, and
// print its leak report (or where to query it) once the server has
// acknowledged everything.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/pool_env.h"
#include "cgoheap.grpc.pb.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/forwarder.h"
#include "client/report.h"
#include "client/ring_dir.h"
#include "common/escape.h"
#include "server/server.h"
#include "symbolize/elf_image.h"
#include "symbolize/go_module.h"

namespace cgoheap::client {
namespace {

namespace fs = std::filesystem;

std::string SelfDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : self.parent_path().string();
}

// The agent sits at ../lib/cgoheap/ relative to bin/, in the build tree and
// in an installed prefix alike.
std::string FindAgent(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = getenv("CGOHEAP_AGENT"); env != nullptr && *env) return env;
  return SelfDir() + "/../lib/cgoheap/libcgoheap_agent.so";
}

// Where execvp will find name: as given when it has a '/', else along $PATH.
std::string FindExecutable(const std::string& name) {
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = getenv("PATH");
  for (std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";;) {
    size_t colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) return "";
    dirs.remove_prefix(colon + 1);
  }
}

struct Child {
  pid_t pid = -1;
  std::string error;  // set when the program could not be started
};

// Why ptrace could not stop the program at its exit, for the report.
std::string PtraceRefused(int err) {
  if (err == EPERM) {
    return "ptrace is not allowed here (kernel.yama.ptrace_scope above 1, a container without "
           "CAP_SYS_PTRACE or whose seccomp profile forbids it, or a debugger already attached)";
  }
  return absl::StrCat("ptrace failed: ", strerror(err));
}

// Each SIGCHLD (a child stopped or ended) wakes the run's loop through this
// pipe, on whichever thread took the signal.
int g_sigchld_pipe = -1;
void OnSigchld(int) {
  int saved = errno;
  char c = 0;
  (void)!write(g_sigchld_pipe, &c, 1);
  errno = saved;
}

// Lets a traced process that is still running go on untraced: PTRACE_DETACH
// needs it stopped, so it is stopped first (PTRACE_INTERRUPT), and a signal
// it then stops for is passed on. Returns false if it was no longer traced
// (it ended). One that does not stop within a second (in the kernel, say,
// behind a vfork child) is left traced: our exit detaches it.
bool DetachRunning(pid_t pid) {
  if (ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) != 0) return false;
  for (int waited_ms = 0; waited_ms < 1000; ++waited_ms) {
    int st;
    pid_t got = waitpid(pid, &st, __WALL | WNOHANG);
    if (got == 0 || (got < 0 && errno == EINTR)) {
      usleep(1000);
      continue;
    }
    if (got != pid || !WIFSTOPPED(st)) return false;
    const int sig = (st >> 16) == 0 ? WSTOPSIG(st) : 0;  // a signal-delivery-stop: its signal
    ptrace(PTRACE_DETACH, pid, nullptr, reinterpret_cast<void*>(intptr_t{sig}));
    return true;
  }
  return true;
}

// Whether every thread of pid but the main one is dying: gone, a zombie, or
// with SIGKILL pending (a whole-process exit kills the other threads so).
// Then the memory no longer changes and can be scanned.
bool OthersDyingNow(pid_t pid) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    if (e.path().filename() == std::to_string(pid)) continue;
    std::ifstream in(e.path() / "status");
    bool dying = false, seen = false;
    for (std::string line; std::getline(in, line);) {
      seen = true;
      if (line.starts_with("State:")) {
        dying = dying || line.find_first_of("ZX", 6) != std::string::npos;
      } else if (line.starts_with("SigPnd:")) {
        dying = dying || (strtoull(line.c_str() + 7, nullptr, 16) >> (SIGKILL - 1) & 1);
      }
    }
    if (seen && !dying) return false;  // (not seen: gone while we looked)
  }
  return true;
}

// The same, given the thread that called exit_group a moment to finish
// (when it is not the main thread, it has no SIGKILL pending: it is on its
// way out already). Threads still running after that are not exiting: the
// main thread ended alone.
bool OthersDying(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    if (OthersDyingNow(pid)) return true;
    usleep(1000);
  }
  return false;
}

// Whether the main thread, stopped at its exit with these registers, ended
// the process itself (exit or exit_group: orig_rax is the system call it
// was in) or was running its own code when the process was killed (-1):
// then its frames, from its stack pointer up, are live. When another thread
// ended the process while the main thread waited in a system call, they
// are a waiting thread's, as dead as the other threads': a Go program's
// main thread parked in the scheduler holds, in frames it never wrote,
// what its cgo calls left on the stack (a lost C string looked reachable
// in one run of 150).
bool MainFramesLive(const user_regs_struct& regs) {
  const auto call = static_cast<int64_t>(regs.orig_rax);
  return call == SYS_exit_group || call == SYS_exit || call == -1;
}

// The AddressSanitizer runtime a program loads (gcc or clang
// -fsanitize=address, go build -asan): it must be the first library loaded,
// and stops the program at once when the agent is preloaded before it ("ASan
// runtime does not come first"); preloaded after it, its malloc would be the
// one found first, and the agent would see nothing. Empty: none.
std::string AddressSanitizerOf(const std::string& executable) {
  ElfImage elf;
  if (executable.empty() || !elf.Open(executable.c_str())) return "";
  return std::string(elf.NeededStartingWith("libasan.so"));
}

// Which children of the program are followed (--trace-children).
enum class Children { kNone, kGo, kAll };

// The minor release in "go1.22.12", "devel go1.27-abcdef" or a
// golang.org/dl wrapper's name "go1.22.3"; 0 when there is none.
int GoMinor(std::string_view version) {
  size_t at = version.find("go1.");
  if (at == std::string_view::npos) return 0;
  std::string_view digits = version.substr(at + 4);
  digits = digits.substr(0, digits.find_first_not_of("0123456789"));
  int minor = 0;
  return absl::SimpleAtoi(std::string(digits), &minor) ? minor : 0;
}

// The go command, or a golang.org/dl wrapper (go1.22.3) that runs one.
bool IsGoCommand(const std::string& program) {
  const std::string name = fs::path(program).filename();
  return name == "go" || (name.rfind("go1.", 0) == 0 && GoMinor(name) > 0);
}

// `go run` and `go test` build the program and run it as their child: the go
// command is the driver, not the program, and the Go programs it runs are
// followed (Children::kGo) unless the user says otherwise.
bool GoCommandRunsTheProgram(const std::vector<std::string>& argv) {
  return argv.size() >= 2 && (argv[1] == "run" || argv[1] == "test") && IsGoCommand(argv[0]);
}

// Whether the program is an ELF executable that names no dynamic loader
// (static or static-pie): nothing loads the agent into it.
bool StaticallyLinked(const std::string& program) {
  ElfImage elf;
  return elf.Open(FindExecutable(program).c_str()) && !elf.HasInterpreter();
}

// What the report says of children not followed.
constexpr char kFollowHint[] =
    "--trace-children follows those that are Go programs, --trace-children=all every one";

// `go run` and `go test` link the program with -s -w (cmd/go's OmitDebug):
// no symbol table, no DWARF, so its C functions would show as ?? in the
// report, with no file:line. Unless the user chose -ldflags (on the command
// line or in $GOFLAGS), the go command is asked to keep them: the entry to
// add to $GOFLAGS, or "" to leave it as it is. On Go 1.19 and 1.22
// -s=false alone brings both back; 1.26 needs -w=false too, and two flags
// in GOFLAGS need quotes, which Go 1.21 reads and 1.19 refuses (it splits
// GOFLAGS at every space; 1.20 was not tried).
std::string GoflagsKeepingSymbols(const std::vector<std::string>& argv) {
  const char* goflags = getenv("GOFLAGS");
  if (goflags != nullptr && strstr(goflags, "-ldflags") != nullptr) return "";
  for (const std::string& a : argv) {
    if (a.rfind("-ldflags", 0) == 0 || a.rfind("--ldflags", 0) == 0) return "";
  }
  // A wrapper's release is in its name; the go command's in its build info
  // (read even when the rest of the Go module is not found).
  int minor = GoMinor(fs::path(argv[0]).filename().string());
  ElfImage elf;
  GoModule go;
  if (minor == 0 && elf.Open(FindExecutable(argv[0]).c_str())) {
    ReadGoModule(elf, &go);
    minor = GoMinor(go.version);
  }
  return minor >= 21 ? "'-ldflags=-s=false -w=false'" : "-ldflags=-s=false";
}

// The processes under the agent that were not followed: a child of the
// program without --trace-children leaves DIR/PID.untraced; one that is not
// a Go program, with --trace-children=go, DIR/PID.notgo holding its name.
struct NotFollowed {
  int untraced = 0;
  int not_go = 0;
  absl::btree_map<std::string, int> not_go_names;  // name -> how many
};

NotFollowed CountNotFollowed(const std::string& ring_dir) {
  NotFollowed n;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ring_dir, ec)) {
    if (e.path().extension() == ".untraced") {
      ++n.untraced;
    } else if (e.path().extension() == ".notgo") {
      ++n.not_go;
      char name[256];
      std::ifstream in(e.path());
      in.read(name, sizeof name - 1);
      std::string got(name, static_cast<size_t>(in.gcount()));
      ++n.not_go_names[got.empty() ? "?" : got];
    }
  }
  return n;
}

// "(49 processes the program started are not Go programs and were not
// followed (gcc ×16, cc1 ×12, ...); --trace-children=all follows them)".
std::string NotGoLine(const NotFollowed& n) {
  std::vector<std::pair<int, std::string>> by_count;
  for (const auto& [name, count] : n.not_go_names) by_count.emplace_back(-count, name);
  std::sort(by_count.begin(), by_count.end());
  std::string names;
  constexpr size_t kShown = 6;
  for (size_t i = 0; i < by_count.size() && i < kShown; ++i) {
    absl::StrAppend(&names, i ? ", " : "", Printable(by_count[i].second),
                    by_count[i].first < -1 ? absl::StrCat(" ×", -by_count[i].first) : "");
  }
  if (by_count.size() > kShown) absl::StrAppend(&names, " and ", by_count.size() - kShown, " more");
  return absl::StrCat("(", n.not_go,
                      n.not_go == 1 ? " process the program started is not a Go program and was"
                                    : " processes the program started are not Go programs and were",
                      " not followed (", names, "); --trace-children=all follows them)");
}

// The same as members of the JSON report: "not_followed" (without
// --trace-children), "not_go" and "not_go_names" ({"gcc": 16, ...}).
std::string NotFollowedJson(const NotFollowed& n) {
  std::vector<std::string> names;
  for (const auto& [name, count] : n.not_go_names) {
    names.push_back(absl::StrCat(JsonString(name), ":", count));
  }
  return absl::StrCat(",\"not_followed\":", n.untraced, ",\"not_go\":", n.not_go,
                      ",\"not_go_names\":{", absl::StrJoin(names, ","), "}");
}

// driver: the program is the go command running the real one (not tracked);
// goflags: its $GOFLAGS, if not "".
Child Launch(const std::vector<std::string>& argv, const std::string& agent,
             const std::string& ring_dir, uint64_t sample_bytes, Children children, bool driver,
             const std::string& goflags, const std::string& service,
             const std::string& debuginfod_urls, bool trace_exit, bool await_tracer,
             std::string* trace_error) {
  Child c;
  int pipefd[2], gofd[2] = {-1, -1};
  if (pipe2(pipefd, O_CLOEXEC) != 0 || (trace_exit && pipe2(gofd, O_CLOEXEC) != 0)) {
    c.error = absl::StrCat("pipe: ", strerror(errno));
    return c;
  }
  std::string preload = agent;
  if (const char* old = getenv("LD_PRELOAD"); old != nullptr && *old) {
    preload = absl::StrCat(agent, ":", old);
  }
  pid_t pid = fork();
  if (pid < 0) {
    c.error = absl::StrCat("fork: ", strerror(errno));
    return c;
  }
  if (pid == 0) {
    close(pipefd[0]);
    if (trace_exit) {  // until the launcher holds us at our exit
      close(gofd[1]);
      char go;
      while (read(gofd[0], &go, 1) < 0 && errno == EINTR) {
      }
      close(gofd[0]);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    setenv("LD_PRELOAD", preload.c_str(), 1);
    setenv("CGOHEAP_RING_DIR", ring_dir.c_str(), 1);
    setenv("CGOHEAP_ROOT_PID", std::to_string(getpid()).c_str(), 1);
    setenv("CGOHEAP_SAMPLE_BYTES", std::to_string(sample_bytes).c_str(), 1);
    setenv("CGOHEAP_TRACE_CHILDREN",
           children == Children::kAll ? "1" : children == Children::kGo ? "2" : "0", 1);
    setenv("CGOHEAP_ROOT_IS_DRIVER", driver ? "1" : "0", 1);
    if (!goflags.empty()) setenv("GOFLAGS", goflags.c_str(), 1);
    setenv("CGOHEAP_NOTE_UNTRACED", "1", 1);
    // Children wait at start-up until the forwarder has looked at their ring
    // (and traced them, if it does: --trace-children in exact mode).
    setenv("CGOHEAP_AWAIT_TRACER", await_tracer ? "1" : "0", 1);
    if (!service.empty()) setenv("CGOHEAP_SERVICE", service.c_str(), 1);
    for (const EnvSetting& e : kPoolsUseMalloc) setenv(e.name, e.value, 0);  // unless set
    // Taken from cgoheap's own environment only (KeepDebuginfodOff).
    if (!debuginfod_urls.empty()) setenv("DEBUGINFOD_URLS", debuginfod_urls.c_str(), 1);
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    execvp(cargv[0], cargv.data());
    int err = errno;
    (void)!write(pipefd[1], &err, sizeof err);
    _exit(127);
  }
  close(pipefd[1]);
  if (trace_exit) {
    // Stopped at its exit, with its memory whole, for the reachability scan
    // (client/exit_scan.h); nothing else of it is traced.
    close(gofd[0]);
    if (ptrace(PTRACE_SEIZE, pid, nullptr, PTRACE_O_TRACEEXIT) != 0) {
      *trace_error = PtraceRefused(errno);
    }
    close(gofd[1]);
  }
  int err = 0;
  ssize_t n;
  do {
    n = read(pipefd[0], &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  close(pipefd[0]);
  if (n == sizeof err) {
    // (Traced, it stops at its exit first: let it go on.)
    for (int st; waitpid(pid, &st, 0) == pid && WIFSTOPPED(st);) {
      ptrace(PTRACE_CONT, pid, nullptr, nullptr);
    }
    c.error = absl::StrCat("cannot run '", argv[0], "': ", strerror(err),
                           err == ENOENT ? " (check the path, or that it is on $PATH)" : "");
    return c;
  }
  c.pid = pid;
  return c;
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<server::Server>> StartLocalServer(const std::string& data_dir) {
  server::ServerOptions opts;
  opts.listen = "127.0.0.1:0";
  opts.data_dir = data_dir.empty() ? "/cgoheap-run" : data_dir;
  // Without --data the run's data goes when it ends: in memory, no disk.
  opts.in_memory = data_dir.empty();
  // One run's data, read back by this very process: a power loss ends the
  // run (and the program) anyway, so no sync is worth waiting for.
  opts.sync = false;
  return server::Server::Start(opts);
}

int RunCommand(const std::vector<std::string>& args) {
  Connection conn;
  std::string service, report_path, data_dir, agent_flag;
  uint64_t sample_bytes = 0, error_exitcode = 0;
  bool all = false, json = false, debuginfod = false, lost_only = false;
  std::string children_flag;  // "": not given
  bool exit_scan = true;
  double ack_timeout = 60, heartbeat = 10;
  FlagSet flags("cgoheap run");
  ConnectionFlags(flags, &conn, /*local_default=*/true);
  flags.String("service", &service, "NAME", "service name (default $CGOHEAP_SERVICE or the program's name)");
  flags.Uint("sample-bytes", &sample_bytes, "N", "sample one allocation per N bytes on average (default 0: every allocation)",
             0, uint64_t{1} << 30);
  flags.Bool("all", &all,
             "also report allocations of the Go runtime and the C library, and what program "
             "images held when replaced by exec");
  LostFlag(flags, &lost_only);
  flags.Bool("exit-scan", &exit_scan,
             "stop the program at its exit (ptrace) and scan its memory to tell lost blocks from "
             "still reachable ones; exact mode only (default true; --exit-scan=false to leave "
             "the program untraced, e.g. to attach a debugger)");
  flags.Bool("json", &json, "print the report as one JSON document");
  flags.String("report", &report_path, "FILE", "write the report to FILE instead of stderr");
  flags.Uint("error-exitcode", &error_exitcode, "N",
             "exit with N when the report lists a leak, or when the program could not be "
             "checked (default 0: the program's own exit code; as valgrind's --error-exitcode)",
             0, 255);
  flags.String("data", &data_dir, "DIR", "RocksDB directory of the local server, kept (default: in memory, gone at the end)");
  flags.String("agent", &agent_flag, "PATH", "the agent library (default: ../lib/cgoheap/ beside cgoheap)");
  flags.Choice("trace-children", &children_flag, {"go", "all", "none"}, "go",
               "also track the program's child processes (fork, exec): those that are Go "
               "programs (go, the default when given bare), every one (all), or none (the "
               "default, except under `go run` and `go test`, whose Go children are followed)");
  DebuginfodFlag(flags, &debuginfod);
  flags.Duration("heartbeat", &heartbeat,
                 "a process with nothing to send tells the server it is alive this often "
                 "(default 10s; keep it well under cgoheapd's --lost-after)",
                 0.05, 3600);
  flags.Duration("ack-timeout", &ack_timeout, "how long to wait for the server to acknowledge everything (default 60s)",
                 0.01, 24 * 3600);
  auto rest = flags.Parse(args, /*stop_at_positional=*/true);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap run");
  const std::string debuginfod_urls = KeepDebuginfodOff(debuginfod);
  if (rest->empty()) {
    std::cerr << "cgoheap run: nothing to run: cgoheap run [flags] -- PROGRAM [ARGS...]\n";
    return 2;
  }
  // Under `go run` and `go test` the go command only drives: the program
  // is the Go child it builds and runs.
  const bool driver = children_flag != "none" && GoCommandRunsTheProgram(*rest);
  const Children children = children_flag == "all" ? Children::kAll
                            : children_flag == "go" || (children_flag.empty() && driver)
                                ? Children::kGo
                                : Children::kNone;
  std::string agent = FindAgent(agent_flag);
  if (access(agent.c_str(), R_OK) != 0) {
    std::cerr << "cgoheap run: agent library not found at " << agent
              << ": reinstall cgoheap, or pass --agent=PATH (or set CGOHEAP_AGENT)\n";
    return 2;
  }

  if (std::string asan = AddressSanitizerOf(FindExecutable((*rest)[0])); !asan.empty()) {
    std::cerr << "cgoheap run: " << (*rest)[0] << " is built with AddressSanitizer (it loads "
              << asan << ": -fsanitize=address, or go build -asan), whose runtime replaces malloc "
              << "and must be the first library loaded, so cgoheap's agent cannot stand between "
                 "the program and its allocator. Build it without AddressSanitizer to run it "
                 "under cgoheap (ASan's own leak check reports its leaks: "
                 "ASAN_OPTIONS=detect_leaks=1).\n";
    return 2;
  }

  // The server answers before the program starts: the one given, or a
  // local one. The local one starts here, not on a thread beside the
  // program: its start (RocksDB, gRPC, their threads: some 8 ms of CPU)
  // then took a core from the program's first milliseconds, which cost a
  // 0.65 s malloc-bound loop 1% of its wall time (61 rotated rounds), and
  // `cgoheap run -- true` is 1.5-2 ms slower this way (some 16 ms in all). And a
  // server that cannot start stops the run before the program runs, as a
  // given one that does not answer does.
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(256 << 20);  // the report of a program with many leaks
  const bool use_local = conn.server.empty();
  std::unique_ptr<server::Server> local;
  Connection to = conn;
  if (use_local) {  // the local server: plaintext, open
    auto s = StartLocalServer(data_dir);
    if (!s.ok()) {
      std::cerr << "cgoheap run: cannot start the local server: " << s.status().message()
                << (data_dir.empty() ? "" : "; check --data, or leave it out to keep the run in memory")
                << "\n";
      return 2;
    }
    local = std::move(*s);
    to = Connection();
    to.server = local->address();
  }
  const std::string target = to.server;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> dialed = to.Dial(channel_args);
  if (!dialed.ok()) {
    std::cerr << "cgoheap run: " << dialed.status().message() << "\n";
    return 2;
  }
  if (!Reachable(*dialed)) {
    std::cerr << "cgoheap run: " << Unreachable(target, "leave out --server to use a local one")
              << "\n";
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel = *dialed;

  // Rings in memory (tmpfs) when there is one: on a disk file system the
  // kernel would write the rings' pages back to disk over and over. What
  // launchers killed before us left there goes first (ring_dir.h).
  const char* tmpdir = getenv("TMPDIR");
  const std::string ring_parent = tmpdir == nullptr && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                  : tmpdir != nullptr && *tmpdir                     ? tmpdir
                                                                                     : "/tmp";
  RingDir::SweepAbandoned(ring_parent);
  RingDir rings;
  if (!rings.Create(ring_parent)) {
    std::cerr << "cgoheap run: cannot create a directory for the rings in " << ring_parent << ": "
              << strerror(errno) << " (set TMPDIR to a directory you can write)\n";
    return 2;
  }
  const std::string& ring_dir = rings.path();
  // Orphaned descendants are reparented to us, so their exit status is ours
  // to read.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  ForwarderOptions fwd_opts;
  fwd_opts.ring_dir = ring_dir;
  fwd_opts.service = service;
  fwd_opts.channel = channel;
  fwd_opts.heartbeat = absl::Seconds(heartbeat);
  // The local server is open; a given one was dialed above, so this is known
  // (a token file read).
  fwd_opts.authorization = use_local ? "" : to.authorization();
  // The exit scan needs every block (exact mode) and ptrace; a traced
  // set-user-ID or set-group-ID program would run without its privileges.
  const bool scan_wanted = exit_scan && sample_bytes == 0;
  std::string trace_error;
  // With --trace-children, the program's children that are Go programs are
  // traced too, for a scan at their exit as the program's (the forwarder
  // asks as it finds each, before reading any of its events; the loop below
  // lets their stops go on as the program's). Other children are not: a
  // shell, make or env runs other programs in its own place with exec, and
  // a traced process that execs a set-user-ID program (sudo) loses its
  // privileges. Under `go run` and `go test` the go command is not traced
  // (nor tracked), only the Go programs it runs.
  bool trace_more = false;  // the program is traced (or drives) and has not ended
  absl::flat_hash_set<pid_t> traced_children;  // until they stop at their exit
  if (scan_wanted && children != Children::kNone) {
    fwd_opts.watch_exit_of = [&](pid_t pid, const v1::ProcessHello& hello) -> std::string {
      if (!trace_more) {
        return !trace_error.empty() ? "the program itself could not be traced: " + trace_error
                                    : "it started as the program ended";
      }
      if (hello.go_version().empty()) {
        return "only the children that are Go programs are traced (a shell, make or env runs "
               "other programs in its place with exec, and a traced process that execs a "
               "set-user-ID program such as sudo loses its privileges)";
      }
      if (ptrace(PTRACE_SEIZE, pid, nullptr, PTRACE_O_TRACEEXIT) != 0) {
        if (errno == ESRCH) return "it ended before cgoheap could trace it";
        if (errno == EPERM) {
          return "ptrace refused (a set-user-ID or set-group-ID program, or one a debugger "
                 "traces already)";
        }
        return PtraceRefused(errno);
      }
      traced_children.insert(pid);
      return "";
    };
  }
  Forwarder fwd(fwd_opts);
  struct Joined {
    std::thread thread;
    ~Joined() {
      if (thread.joinable()) thread.join();
    }
  } prepare;  // after fwd, which it uses: joined before fwd goes
  bool trace_exit = scan_wanted && !driver;
  if (struct stat st; trace_exit && stat(FindExecutable((*rest)[0]).c_str(), &st) == 0 &&
                      (st.st_mode & (S_ISUID | S_ISGID)) != 0) {
    trace_exit = false;
    trace_error = "it is a set-user-ID or set-group-ID program, which would lose its privileges "
                  "if traced";
  }
  const bool await_tracer = scan_wanted && children != Children::kNone && (trace_exit || driver);
  const std::string keep_symbols = driver ? GoflagsKeepingSymbols(*rest) : "";
  std::string goflags;
  if (!keep_symbols.empty()) {
    const char* old = getenv("GOFLAGS");
    goflags = old != nullptr && *old ? absl::StrCat(old, " ", keep_symbols) : keep_symbols;
  }
  if (driver) {
    std::cerr << "cgoheap run: `go " << (*rest)[1] << "` builds "
              << ((*rest)[1] == "test" ? "each package's test binary" : "the program")
              << " and runs it as its child: following "
              << (children == Children::kAll ? "every process" : "the Go programs")
              << " it runs, not the go command"
              << (children_flag.empty() ? " (--trace-children=go)" : "")
              << (keep_symbols.empty() ? ""
                                       : "; linked with GOFLAGS+=" + keep_symbols +
                                             " to name its C code")
              << "\n";
  }
  Child child = Launch(*rest, agent, ring_dir, sample_bytes, children, driver, goflags, service,
                       debuginfod_urls, trace_exit, await_tracer, &trace_error);
  const bool traced = trace_exit && child.pid >= 0 && trace_error.empty();
  if (traced) fwd.WatchExit(child.pid);
  trace_more = traced || (await_tracer && driver && child.pid >= 0);
  // The executable's debug information is read on a thread of its own while
  // the program starts, not before (tens of milliseconds for a large Go
  // binary); a stack that needs it first waits for it.
  if (std::string exe = FindExecutable((*rest)[0]); !exe.empty() && child.pid >= 0 && !driver) {
    prepare.thread = std::thread([&fwd, exe] { fwd.Prepare(exe); });
  }
  auto cleanup = [&] {
    std::error_code ec;
    fs::remove_all(ring_dir, ec);
    local.reset();
  };
  if (child.pid < 0) {
    std::cerr << "cgoheap run: " << child.error << "\n";
    cleanup();
    return 127;
  }
  // Like a shell: ^C goes to the program, and we stay to report.
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);

  // Poll as often as the event rate needs (PollPacer: 1 to 50 ms), and wake
  // at once when the program exits, or stops for its tracer (us): a stop
  // holds one of its threads until we let it go.
  int root_pidfd = static_cast<int>(syscall(SYS_pidfd_open, child.pid, 0));
  int wake[2] = {-1, -1};
  if (trace_more && pipe2(wake, O_CLOEXEC | O_NONBLOCK) == 0) {
    g_sigchld_pipe = wake[1];
    struct sigaction sa = {};
    sa.sa_handler = OnSigchld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, nullptr);
  }
  std::string agent_file = agent;
  if (std::error_code ec; fs::exists(agent, ec)) agent_file = fs::canonical(agent, ec).string();
  bool exit_seen = false;
  int exit_code = 1;
  // A run whose leaks could not be learnt: with --error-exitcode, no pass.
  auto unchecked = [&](int code) {
    return error_exitcode != 0 ? static_cast<int>(error_exitcode) : code;
  };
  PollPacer pacer;
  bool root_done = false;
  // Lets a stopped program go on (at once: a stop holds one of its threads),
  // and collects the ends of the program and its descendants.
  auto reap = [&] {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (WIFSTOPPED(status)) {  // only traced processes report stops: the program, Go children
        const int event = status >> 16;
        if (event == PTRACE_EVENT_EXIT) {
          if (pid == child.pid) {
            exit_seen = true;
          } else {
            traced_children.erase(pid);
          }
          if (OthersDying(pid)) {
            ExitScanOptions scan;
            scan.skip_files = {agent_file};
            if (user_regs_struct regs; ptrace(PTRACE_GETREGS, pid, nullptr, &regs) == 0) {
              scan.main_sp = MainFramesLive(regs) ? regs.rsp : 0;
              scan.main_tp = regs.fs_base;
            }
            fwd.ScanAtExit(pid, std::move(scan));
          } else {
            fwd.ExitNotScanned(pid, "its main thread ended before its other threads (pthread_exit): "
                                    "a scan needs the whole process at its end");
          }
          ptrace(PTRACE_CONT, pid, nullptr, nullptr);
        } else if (event == PTRACE_EVENT_STOP) {
          ptrace(PTRACE_LISTEN, pid, nullptr, nullptr);  // stopped (^Z), as untraced
        } else {
          ptrace(PTRACE_CONT, pid, nullptr, reinterpret_cast<void*>(intptr_t{WSTOPSIG(status)}));
        }
        continue;
      }
      fwd.OnExit(pid, status);
      if (pid == child.pid) {
        exit_code = ExitCodeOf(status);
        root_done = true;
      }
    }
  };
  while (!root_done) {
    reap();  // before reading the rings, which can take a while
    if (root_done) break;
    int idle_ms = pacer.Next(fwd.Poll());
    reap();
    if (root_done) break;
    // (A new ring wakes us too: a child that waits for its look goes on.)
    pollfd pfd[3] = {{root_pidfd, POLLIN, 0}, {wake[0], POLLIN, 0},
                     {await_tracer ? fwd.discovery_fd() : -1, POLLIN, 0}};
    if (root_pidfd >= 0 || wake[0] >= 0) {
      if (poll(pfd, 3, idle_ms) > 0 && (pfd[1].revents & POLLIN)) {
        char drain[64];
        while (read(wake[0], drain, sizeof drain) > 0) {
        }
      }
    } else {
      usleep(idle_ms * 1000);
    }
  }
  if (wake[0] >= 0) {
    signal(SIGCHLD, SIG_DFL);
    close(wake[0]);
    close(wake[1]);
  }
  // Children traced that did not stop at their exit: still running (they
  // go on untraced: nothing would let their stops go once we are gone), or
  // ended another way.
  trace_more = false;
  for (pid_t pid : traced_children) {
    fwd.ExitNotScanned(pid, DetachRunning(pid)
                                ? "it outlived the program, whose end ended the run"
                                : "it was not stopped at its exit (it ended another way)");
  }
  if (scan_wanted && !exit_seen && !driver) {
    fwd.ExitNotScanned(child.pid, !trace_error.empty()
                                      ? trace_error
                                      : "it was not stopped at its exit (it ended another way)");
  }
  if (root_pidfd >= 0) close(root_pidfd);
  absl::Status st = fwd.Finish(absl::Seconds(ack_timeout));
  if (!st.ok()) {
    std::cerr << "cgoheap run: the server did not acknowledge every event: " << st.message()
              << "\n";
    cleanup();
    return unchecked(exit_code);
  }

  std::vector<std::string> ids = fwd.process_ids();
  if (ids.empty() && fwd.rings_ignored() > 0) {
    // The agent ran, but its ring was not one to read (said above when
    // found): an agent of another version of cgoheap, most often.
    std::cerr << "cgoheap run: " << (*rest)[0]
              << " was not recorded: the agent started in it, but its ring could not be read "
                 "(see above); use the agent built with this cgoheap (--agent).\n";
    cleanup();
    return unchecked(exit_code);
  }
  const NotFollowed not_followed = CountNotFollowed(ring_dir);
  if (ids.empty()) {
    // No ring appeared: the agent never ran in the program, or could not
    // create its ring. An empty report would read as "no leaks".
    constexpr char kWhatIsSeen[] =
        "cgoheap sees programs that load shared libraries (a Go program built with cgo, not "
        "CGO_ENABLED=0 or -static) and that keep LD_PRELOAD; the agent also needs room for its "
        "ring in ";
    if (driver) {
      std::cerr << "cgoheap run: `go " << (*rest)[1]
                << "` ran no Go program that the agent started in"
                << (exit_code != 0 ? absl::StrCat(" (go exited with status ", exit_code,
                                                  ": if it could not build the program, its "
                                                  "errors are above)")
                                   : "")
                << ". " << kWhatIsSeen << ring_dir << ".\n";
    } else if (rest->size() >= 2 && IsGoCommand((*rest)[0]) && !GoCommandRunsTheProgram(*rest)) {
      // `go build`, `go install`, `go generate`: the go command and the
      // tools it runs, never the user's program.
      std::cerr << "cgoheap run: `go " << (*rest)[1]
                << "` runs no program of yours, and the go command is not recorded: build the "
                   "program, then run it under cgoheap (cgoheap run -- ./PROGRAM), or give "
                   "cgoheap run `go run` or `go test`, which it follows to the program they "
                   "run.\n";
    } else if (not_followed.untraced == 0 && StaticallyLinked((*rest)[0])) {
      // (A static program whose children the agent started in, as the go
      // command's, gets the hint to follow them below.)
      std::cerr << "cgoheap run: " << (*rest)[0]
                << " was not recorded: it is statically linked, and LD_PRELOAD needs the dynamic "
                   "loader to load the agent. A Go program built with CGO_ENABLED=0 makes no C "
                   "allocations to record; a cgo program linked with -extldflags=-static is "
                   "recorded once built without -static.\n";
    } else {
      std::cerr << "cgoheap run: " << (*rest)[0]
                << " was not recorded: the agent did not start in it"
                << (not_followed.untraced > 0
                        ? absl::StrCat(", but in ", not_followed.untraced,
                                       not_followed.untraced == 1 ? " process" : " processes",
                                       " it started (", kFollowHint, ")")
                        : "")
                << ". " << kWhatIsSeen << ring_dir << ".\n";
    }
    cleanup();
    return unchecked(exit_code);
  }
  std::string report;
  // The report (local), or, for --error-exitcode, whether this run leaked
  // (--server: the report stays there, the answer is asked of it).
  if (local || error_exitcode != 0) {
    v1::LeaksRequest req;
    req.set_all(all);
    req.set_lost_only(lost_only);
    req.set_limit(100000);  // one run's report: every leak
    if (local && data_dir.empty()) {
      // a fresh store holds this run only
    } else {
      // the store keeps other runs: this run's processes only
      for (const std::string& id : ids) req.add_process_ids(id);
    }
    v1::LeaksResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status qs = v1::Query::NewStub(channel)->Leaks(&ctx, req, &resp);
    if (!qs.ok()) {
      std::cerr << "cgoheap run: " << RpcError(qs, target) << "\n";
      cleanup();
      return unchecked(exit_code);
    }
    if (local) {
      report = json ? LeaksJson(resp, NotFollowedJson(not_followed))
                    : LeaksText(resp, TextOptions{absl::StrCat("==", child.pid, "=="), all});
    }
    if (error_exitcode != 0 && resp.leaks_size() > 0) exit_code = static_cast<int>(error_exitcode);
  }
  if (!local) {  // (ids is not empty here)
    report = absl::StrCat("==", child.pid, "== cgoheap: ", ids.size(),
                          ids.size() == 1 ? " process" : " processes",
                          " recorded on ", conn.server, "; see: cgoheap leaks --server=", conn.server,
                          " --process=", ids[0], "\n");
  }
  if (int untraced = not_followed.untraced; untraced > 0 && !json) {
    absl::StrAppend(&report, "==", child.pid, "== (", untraced,
                    untraced == 1 ? " process the program started ran without being followed: "
                                    "what it allocated is"
                                  : " processes the program started ran without being followed: "
                                    "what they allocated is",
                    " not in this report; ", kFollowHint, ")\n");
  }
  if (not_followed.not_go > 0 && !json) {
    absl::StrAppend(&report, "==", child.pid, "== ", NotGoLine(not_followed), "\n");
  }
  if (report_path.empty()) {
    std::cerr << report;
  } else {
    std::ofstream out(report_path, std::ios::trunc);
    out << report;
    if (!out) std::cerr << "cgoheap run: cannot write the report to " << report_path << "\n";
  }
  if (local != nullptr && data_dir.empty()) {
    // The run lived in memory and its report is out: nothing is left to
    // keep, so the process ends here rather than take the server, its
    // threads and every library down one by one (milliseconds a run).
    std::error_code ec;
    fs::remove_all(ring_dir, ec);
    fflush(nullptr);
    _exit(exit_code);
  }
  cleanup();
  return exit_code;
}

}  // namespace cgoheap::client
