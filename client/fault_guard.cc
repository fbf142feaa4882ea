#include "client/fault_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>

#include "symbolize/file_access.h"

namespace cgoheap::client {
namespace {

thread_local FaultGuard* t_guard = nullptr;
struct sigaction g_previous_bus, g_previous_segv;
uintptr_t g_page_size = 4096;  // set before the handler is installed

// A SIGBUS past the end of a file mapping: the page becomes a private page
// of zeros, readable and writable (a private mapping may be written), so
// the faulting instruction runs again and succeeds. Raw mmap: async-signal
// safe.
bool ZeroPage(const siginfo_t* info) {
  if (info->si_code != BUS_ADRERR) return false;
  const uintptr_t page = reinterpret_cast<uintptr_t>(info->si_addr) & ~(g_page_size - 1);
  const long got = syscall(SYS_mmap, page, g_page_size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (got != static_cast<long>(page)) return false;
  g_zeroed_file_pages.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void OnFault(int sig, siginfo_t* info, void* context) {
  for (FaultGuard* g = t_guard; g != nullptr; g = g->outer()) {
    if (g->Covers(info->si_addr)) {
      t_guard = g->outer();
      siglongjmp(g->env, 1);
    }
  }
  if (sig == SIGBUS && ZeroPage(info)) return;
  // Not ours: as if this handler had never been installed.
  const struct sigaction& prev = sig == SIGBUS ? g_previous_bus : g_previous_segv;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
    prev.sa_handler(sig);
    return;
  }
  // Default action: restore it; the faulting instruction runs again and the
  // process dies of the signal, with its core.
  signal(sig, SIG_DFL);
}

}  // namespace

void InstallFaultHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (long size = sysconf(_SC_PAGESIZE); size > 0) g_page_size = static_cast<uintptr_t>(size);
    struct sigaction sa = {};
    sa.sa_sigaction = OnFault;
    // SA_NODEFER: the jump out of the handler skips the mask's restore.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_bus);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
  });
}

FaultGuard::FaultGuard(const void* base, size_t bytes)
    : lo_(static_cast<const char*>(base)), hi_(lo_ + bytes), outer_(t_guard) {
  InstallFaultHandler();
  t_guard = this;
}

FaultGuard::~FaultGuard() {
  // After a jump t_guard already points to the outer guard.
  if (t_guard == this) t_guard = outer_;
}

}  // namespace cgoheap::client
