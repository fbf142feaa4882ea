// Decides whose allocation a stack is, for leak reports.
//
// A Go program with cgo has allocations that are never freed and are nobody's
// bug: thread-local storage for every thread the Go runtime creates (valgrind
// reports 1,152 bytes "possibly lost" of it in every Go program), stdio
// buffers, loader data. They are "internal": hidden by default, shown with
// --all. A stack is internal when
//   - the first Go frame above the C code (past the cgo bridge itself) is in
//     package runtime, or the stack entered C from the Go runtime's own
//     system stack (asmcgocall with no goroutine frames above it); or
//   - a frame is one of the C library's one-time allocators (kLibcInternal).
//
//   StackClass c = ClassifyStack(stack);
//   if (c.internal) ...c.reason...; c.user_frame indexes the first user frame
#pragma once

#include <string>

#include "cgoheap.pb.h"

namespace cgoheap::server {

struct StackClass {
  bool internal = false;
  std::string reason;
  int user_frame = -1;  // first frame of the user's own code, -1 if none
};

StackClass ClassifyStack(const v1::Stack& stack);

// True for a Go function of the standard library (its package path has no
// dot in its first element and is not "main").
bool IsGoStdlibFunction(const std::string& function);

}  // namespace cgoheap::server
