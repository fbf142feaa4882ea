#include "client/fault_guard.h"

#include <signal.h>

#include <mutex>

namespace cgoheap::client {
namespace {

thread_local FaultGuard* t_guard = nullptr;
struct sigaction g_previous_bus, g_previous_segv;

void OnFault(int sig, siginfo_t* info, void* context) {
  for (FaultGuard* g = t_guard; g != nullptr; g = g->outer()) {
    if (g->Covers(info->si_addr)) {
      t_guard = g->outer();
      siglongjmp(g->env, 1);
    }
  }
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

void Install() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_sigaction = OnFault;
    // SA_NODEFER: the jump out of the handler skips the mask's restore.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_bus);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
  });
}

}  // namespace

FaultGuard::FaultGuard(const void* base, size_t bytes)
    : lo_(static_cast<const char*>(base)), hi_(lo_ + bytes), outer_(t_guard) {
  Install();
  t_guard = this;
}

FaultGuard::~FaultGuard() {
  // After a jump t_guard already points to the outer guard.
  if (t_guard == this) t_guard = outer_;
}

}  // namespace cgoheap::client
