// Limits the forwarder and cgoheapd share: what one side sends, the other
// accepts. A stream message the server refuses ends that process's stream,
// so the forwarder must never build one.
#pragma once

#include <cstddef>

namespace cgoheap {

// Frames in one symbolized stack (inlined calls count as frames).
inline constexpr int kMaxFramesPerStack = 256;
// A gRPC message on the ingest stream.
inline constexpr size_t kMaxMessageBytes = 16 << 20;
// The forwarder sends a batch before it grows past this (events and the
// stacks they first use), well below kMaxMessageBytes.
inline constexpr size_t kBatchBytes = 4 << 20;

}  // namespace cgoheap
