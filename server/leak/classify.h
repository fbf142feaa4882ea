// Decides whose allocation a stack is, for leak reports.
//
// A Go program with cgo has allocations that are never freed and are nobody's
// bug: thread-local storage for every thread the Go runtime creates (valgrind
// reports 1,152 bytes "possibly lost" of it in every Go program), stdio
// buffers, loader data. They are "internal": hidden by default, shown with
// --all. A stack is internal only on positive evidence that the allocating
// code is theirs:
//   - the first Go frame above the C code (past the cgo bridge itself) is in
//     package runtime; or
//   - a frame is one of the C library's one-time allocators (kLibcInternal).
// A stack that entered C from Go (runtime.asmcgocall) but has no Go frame
// above the bridge was cut short: the agent could not recover its Go part.
// That is no evidence of anything; it is shown, marked incomplete.
//
// The user's own code: the frames the forwarder marked as the program's
// main module (Frame.own, Stack.own_basis), else the best evidence the
// frames themselves give (a Go function outside the standard library, a C
// frame with a source file outside the system's libraries).
//
//   StackClass c = ClassifyStack(stack);
//   if (c.internal) ...c.reason...; c.user_frame indexes the first user frame
#pragma once

#include <string>
#include <vector>

#include "cgoheap.pb.h"

namespace cgoheap::server {

struct StackClass {
  bool internal = false;
  std::string reason;
  int user_frame = -1;  // first frame of the user's own code, -1 if none
  std::vector<int> user_frames;  // every frame of the user's own code
  std::string user_code;         // how the user's code was told apart
  std::string incomplete;        // what is missing from the stack, if known
};

StackClass ClassifyStack(const v1::Stack& stack);
// Copies what c says about a stack into a leak.
void DescribeLeak(const StackClass& c, v1::Leak* leak);

// True for a Go function of the standard library (its package path has no
// dot in its first element and is not "main").
bool IsGoStdlibFunction(const std::string& function);

}  // namespace cgoheap::server
