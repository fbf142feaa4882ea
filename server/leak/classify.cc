#include "server/leak/classify.h"

#include <array>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/go_names.h"

namespace cgoheap::server {
namespace {

// The frames that carry a cgo call from Go into C; they belong to nobody.
constexpr std::array<std::string_view, 5> kCgoBridge = {
    "runtime.asmcgocall", "runtime.cgocall", "runtime.systemstack", "runtime.mcall",
    "runtime.asmcgocall_no_g"};

// One-time allocations of glibc and the dynamic loader.
constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kLibcInternal = {{
    {"_IO_file_doallocate", "stdio buffer"},
    {"_dl_allocate_tls", "thread-local storage"},
    {"_dl_allocate_tls_storage", "thread-local storage"},
    {"_dl_init", "shared library initialization"},
    {"_dl_map_object", "dynamic loader"},
    {"_dl_open", "dynamic loader (dlopen)"},
    {"__tzfile_read", "time zone data"},
    {"_nl_find_locale", "locale data"},
    {"__libc_setlocale", "locale data"},
}};

// Files and functions that cgo generates: not the user's code.
bool IsCgoGenerated(const v1::Frame& f) {
  std::string_view fn = f.function(), file = f.file();
  return fn.starts_with("_cgo_") || (fn.find("._Cfunc_") != std::string_view::npos) ||
         (fn.find("._cgo_") != std::string_view::npos) || fn.starts_with("x_cgo_") ||
         file.ends_with("_cgo_gotypes.go") || file.ends_with("_cgo_export.c") ||
         file.ends_with("cgo-gcc-prolog") || file.ends_with("cgo-generated-wrappers");
}

bool IsSystemObject(std::string_view object) {
  return object.starts_with("/lib/") || object.starts_with("/lib64/") ||
         object.starts_with("/usr/lib/") || object.starts_with("/usr/lib64/");
}

bool IsUserFrame(const v1::Stack& stack, const v1::Frame& f) {
  if (f.function().empty() || f.function() == "??" || IsCgoGenerated(f)) return false;
  if (!stack.own_basis().empty()) return f.own();
  if (f.go()) return !IsGoStdlibFunction(f.function());
  return !f.file().empty() && !IsSystemObject(f.object()) &&
         f.file().find("/runtime/cgo/") == std::string::npos;
}

bool InBridge(std::string_view fn) {
  for (std::string_view b : kCgoBridge) {
    if (fn == b) return true;
  }
  return false;
}

}  // namespace

bool IsGoStdlibFunction(const std::string& function) {
  std::string_view pkg = GoPackageOf(function);
  if (pkg.empty() || pkg == "main") return false;
  std::string_view first = pkg.substr(0, pkg.find('/'));
  return first.find('.') == std::string_view::npos;
}

StackClass ClassifyStack(const v1::Stack& stack) {
  StackClass c;
  c.user_code = stack.own_basis().empty()
                    ? "Go code outside the standard library, and C code outside the system's "
                      "libraries (no Go build information of the executable to go by: a C "
                      "program, or a forwarder that did not send it)"
                    : stack.own_basis();
  bool saw_go = false, saw_caller = false;
  for (int i = 0; i < stack.frames_size(); ++i) {
    const v1::Frame& f = stack.frames(i);
    if (i > 0 && IsUserFrame(stack, f)) {
      if (c.user_frame < 0) c.user_frame = i;
      c.user_frames.push_back(i);
    }
    for (const auto& [fn, why] : kLibcInternal) {
      if (f.function() == fn && !c.internal) {
        c.internal = true;
        c.reason = absl::StrCat("C library: ", std::string(why), " (", std::string(fn), ")");
      }
    }
    if (!f.go()) continue;
    saw_go = true;
    if (saw_caller || InBridge(f.function())) continue;
    saw_caller = true;
    if (f.function().starts_with("runtime.") || f.function().starts_with("runtime/")) {
      if (!c.internal) {
        c.internal = true;
        c.reason = absl::StrCat("Go runtime (", f.function(), ")");
      }
    }
  }
  if (saw_go && !saw_caller) {
    c.incomplete = "the Go frames above the cgo call could not be recovered";
  }
  return c;
}

void DescribeLeak(const StackClass& c, v1::Leak* leak) {
  leak->set_user_frame(c.user_frame);
  leak->mutable_user_frames()->Assign(c.user_frames.begin(), c.user_frames.end());
  leak->set_user_code(c.user_code);
  leak->set_incomplete(c.incomplete);
}

}  // namespace cgoheap::server
