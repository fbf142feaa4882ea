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
// A process's hello (its arguments, executable, service...): cgoheapd refuses
// larger ones. The forwarder's are a few KiB at most: the ring holds 1 KiB of
// command line, 512 bytes of executable path and 128 of service name
// (agent/ring.h), escaped at most 4 to 1.
inline constexpr size_t kMaxHelloBytes = 64 << 10;
// The forwarder sends a batch before it grows past this (events and the
// stacks they first use), well below kMaxMessageBytes.
inline constexpr size_t kBatchBytes = 4 << 20;

}  // namespace cgoheap
