// Reading memory that another process can take away.
//
// The forwarder maps each target's ring file MAP_SHARED. The target can
// truncate that file at any time (a bug, or on purpose); touching a page
// past the file's new end then raises SIGBUS, which would kill the forwarder
// and every other process it serves. Inside a FaultGuard, a SIGBUS or SIGSEGV
// whose address lies in the guarded range returns to the guard's sigsetjmp
// instead; anything else goes to the handler that was there before (or
// kills the process as it would have).
//
//   FaultGuard guard(base, bytes);
//   if (sigsetjmp(guard.env, 0) != 0) { /* the mapping went away */ }
//   ... reads and writes of [base, base + bytes) ...
//
// sigsetjmp must be called in the frame that owns the guard, and the frames
// a fault can skip (those called after sigsetjmp) must hold no lock and be in
// the middle of no allocation when they touch the range: the jump skips
// them. Guards nest per thread.
//
// Outside every guard, a SIGBUS past the end of a file mapping (BUS_ADRERR:
// the file shrank after it was mapped) is not fatal either: the page is
// replaced by a page of zeros and the read goes on (counted in
// g_zeroed_file_pages, symbolize/file_access.h). The symbolizer maps
// executables and libraries a target names, and libdw maps them too; a
// target that truncates one of its own libraries must not kill the
// forwarder and every process it serves.
#pragma once

#include <csetjmp>
#include <cstddef>

namespace cgoheap::client {

// Installs the handler (once per process; every FaultGuard does too): the
// forwarder, before it maps any file a target names.
void InstallFaultHandler();

class FaultGuard {
 public:
  FaultGuard(const void* base, size_t bytes);
  ~FaultGuard();
  FaultGuard(const FaultGuard&) = delete;
  FaultGuard& operator=(const FaultGuard&) = delete;

  sigjmp_buf env;

  bool Covers(const void* addr) const { return addr >= lo_ && addr < hi_; }
  FaultGuard* outer() const { return outer_; }

 private:
  const char* lo_;
  const char* hi_;
  FaultGuard* outer_;
};

}  // namespace cgoheap::client
