// Uncompressed copies of ELF files whose debug sections are compressed, kept
// across runs.
//
// Go's linker compresses the DWARF of every binary it writes, and Debian's
// separate debug files (libc6-dbg, which valgrind pulls in, and every
// -dbgsym package) are compressed too. libdw inflates every debug section of
// a file the first time it looks at its DWARF: for libc's debug file that is
// 9.8 MB, some 45 ms of CPU in each `cgoheap run` whose stacks touch libc;
// for a Go binary 1.5 MB and more. Most of it is never read: a leak's frames
// need a few compilation units and their line tables.
//
// So the first time, the forwarder writes a copy of the file in which each
// compressed .debug_* section is stored uncompressed, and hands libdw that
// copy from then on: libdw maps it and reads only the pages it needs. The
// copy is the original byte for byte, the uncompressed sections appended
// after it and a new section header table after them (only e_shoff in the
// ELF header changes): every other section, the program headers and the
// notes (the build id libdw checks a debug file by) stay where they were.
//
// The cache lives in $CGOHEAP_CACHE_DIR, else $XDG_CACHE_HOME/cgoheap, else
// $HOME/.cache/cgoheap (directory "debug", mode 0700), keyed by the file's
// build id and size; a file without a build id is not cached. Copies are
// written under a temporary name, synced, then renamed, so concurrent
// forwarders share the cache safely; beyond kDebugCacheMaxBytes the least
// recently used copies are removed. Anything that fails (no home, a full
// disk, a file that is not as expected) leaves the original to libdw, as
// before.
//
//   std::string copy = UncompressedDebugCopy(elf);  // "" when none
//   if (!copy.empty()) ...give libdw copy instead of the original...
#pragma once

#include <cstdint>
#include <string>

namespace cgoheap {

class ElfImage;

inline constexpr uint64_t kDebugCacheMaxBytes = uint64_t{512} << 20;

// The cache directory, created if missing; empty when there is none (set
// CGOHEAP_CACHE_DIR to the empty string to turn the cache off).
std::string DebugCacheDir();

// The path of the cached copy of the file elf views (opened from a file, not
// memory), made now if missing; empty when the file has no zlib-compressed
// .debug_info (its DWARF is elsewhere, or not compressed) or no build id, or
// the cache cannot be used.
std::string UncompressedDebugCopy(const ElfImage& elf);

struct DebugCacheCounts {
  uint64_t hits = 0;  // copies found in the cache
  uint64_t made = 0;  // copies written
};
// For tests: what this process did with the cache so far.
DebugCacheCounts DebugCacheCountsSoFar();

}  // namespace cgoheap
