// The id of a symbolized stack, computed the same way by the forwarder
// (which names stacks with it) and by cgoheapd (which checks it): the first
// 8 bytes of SHA-256 over each frame's function, file and line. The same
// leak gets the same id in every process, on every host, in every build;
// and since the id is a cryptographic digest of the frames, no client can
// define a stack under an id another stack has (a stranger who could would
// give a victim's leak C-library frames, and hide it as internal).
#pragma once

#include <cstdint>

#include "cgoheap.pb.h"

namespace cgoheap {

uint64_t StackIdOf(const v1::Stack& stack);

}  // namespace cgoheap
