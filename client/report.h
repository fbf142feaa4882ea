// What the CLI prints: leak reports (valgrind-like text, or one JSON
// document) and process listings.
#pragma once

#include <string>

#include "cgoheap.pb.h"

namespace cgoheap::client {

struct TextOptions {
  std::string prefix = "==";  // "==PID==" in `cgoheap run`
  bool all = false;
};

std::string LeaksText(const v1::LeaksResponse& leaks, const TextOptions& opts);
// {"leaks": [{"kind","bytes","blocks","processes","frames":[...]}], ...}
// extra: more members of the document, each ",\"name\":value" (cgoheap run's).
std::string LeaksJson(const v1::LeaksResponse& leaks, std::string_view extra = "");
std::string LeakJson(const v1::Leak& leak);  // one entry of LeaksJson, one line
std::string WatchLine(const v1::Leak& leak);
std::string TopText(const v1::TopResponse& r, const std::string& by);
std::string TopJson(const v1::TopResponse& r);
std::string ProcessesText(const v1::ListProcessesResponse& list);
std::string ProcessesJson(const v1::ListProcessesResponse& list);

std::string JsonString(std::string_view s);
// 1234567 -> "1,234,567"
std::string Thousands(uint64_t v);

}  // namespace cgoheap::client
