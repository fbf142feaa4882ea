// Opening files that a target process names.
//
// The forwarder opens the executable and libraries a target says it maps
// (its agent's snapshot of /proc/self/maps, written into the ring the target
// can rewrite at will). So a path is untrusted input: it may name a FIFO
// (an open would block forever), a device, a symlink planted to point at a
// file the target may not read, or a file only the forwarder's user can
// read (a sidecar forwarder often has more privilege than the processes it
// serves, and what it symbolizes is published through the query API).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace cgoheap {

// Opens path read-only as a regular file: without blocking (O_NONBLOCK: a
// FIFO or device is refused, never waited on), without following a symlink
// in any component (paths from /proc/PID/maps are already resolved, so a
// symlink on the way is one planted since), close-on-exec. Returns the fd, or
// -1 with errno set (ELOOP for a symlink, EINVAL for a file that is not
// regular).
int OpenRegularFile(const char* path);

// Whether a process running as uid/gid could read path: every directory on
// the way searchable and the file readable, by their permission bits. Its
// supplementary groups and ACLs are not known here, so they do not count
// (the answer errs on no). uid 0 may read anything.
bool MayRead(const std::string& path, uid_t uid, gid_t gid);

// A target can also shrink a file the forwarder has mapped (a library of
// its own, in a directory it may write): a read of the mapping past the
// file's new end is then a SIGBUS. In the forwarder such a page is replaced
// by a page of zeros (client/fault_guard.h, InstallFaultHandler), so the
// read goes on and finds nothing sensible, and this counts those pages:
// something built from a mapping while it moved (a copy for the debug
// cache) may hold zeros and is not kept.
extern std::atomic<uint64_t> g_zeroed_file_pages;

}  // namespace cgoheap
