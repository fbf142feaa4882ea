// The environment that makes allocators with pools of their own allocate
// every object with malloc, so that a leaked object is seen with the stack
// that allocated it: glib's slice allocator (before glib 2.76, used by every
// GTK, GStreamer or libvips program) hands objects out of blocks it took
// from malloc earlier, so a leak would show as the block, with the stack of
// whichever call made the pool grow; Python's object allocator takes its
// arenas from mmap, so a leak inside it would not show at all.
//
// Set unless the user set them: by `cgoheap run` before it starts the
// program, and by the agent's constructor, for a program started by hand
// with LD_PRELOAD (Python reads PYTHONMALLOC when it starts, after main).
// glib 2.74 has read G_SLICE by the time the agent's constructor runs (a
// preloaded library's constructor runs after those of the libraries the
// program links; set there, it changed nothing): only the launcher's counts.
#pragma once

namespace cgoheap {

struct EnvSetting {
  const char* name;
  const char* value;
};

inline constexpr EnvSetting kPoolsUseMalloc[] = {
    {"G_SLICE", "always-malloc"},
    {"PYTHONMALLOC", "malloc"},
};

}  // namespace cgoheap
