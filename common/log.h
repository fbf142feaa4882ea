// Warnings for degraded modes: written once per call site to stderr (the
// journal, under systemd), so a condition that repeats does not flood it;
// the caller also bumps a metric so the repeats are counted.
//
//   static std::atomic<bool> warned;
//   WarnOnce(warned, absl::StrCat("snapshot failed: ", st.message()));
#pragma once

#include <atomic>
#include <string>

namespace cgoheap {

void LogWarning(const std::string& message);

inline void WarnOnce(std::atomic<bool>& warned, const std::string& message) {
  if (!warned.exchange(true, std::memory_order_relaxed)) LogWarning(message);
}

}  // namespace cgoheap
