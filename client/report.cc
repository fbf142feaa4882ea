#include "client/report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/escape.h"

namespace cgoheap::client {
namespace {

std::string Plural(uint64_t n, const char* one, const char* many) {
  return absl::StrCat(Thousands(n), " ", n == 1 ? one : many);
}

// Every string below that came from a target process (its arguments, its
// symbols' names and files) goes through Printable before it reaches a
// terminal.
std::string Location(const v1::Frame& f) {
  if (!f.file().empty()) {
    return f.line() ? absl::StrCat(Printable(f.file()), ":", f.line()) : Printable(f.file());
  }
  if (!f.object().empty()) return absl::StrCat("in ", Printable(f.object()));
  return "";
}

// 1234567.0 -> "1.2 MB/hour"
std::string Rate(double bytes_per_hour) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes_per_hour >= 1000 && u < 4) {
    bytes_per_hour /= 1000;
    ++u;
  }
  return absl::StrFormat("%.1f %s/hour", bytes_per_hour, units[u]);
}

std::string Clock(int64_t unix_nanos) {
  time_t t = static_cast<time_t>(unix_nanos / 1'000'000'000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string StateText(const v1::ProcessInfo& p) {
  if (p.state() == "exited") return absl::StrCat("exited(", p.end().exit_code(), ")");
  if (p.state() == "killed") return absl::StrCat("killed(", p.end().signal(), ")");
  return p.state();
}

}  // namespace

std::string Thousands(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// Valid JSON whatever the bytes: control characters (C0, DEL, C1) and
// bidirectional controls as \uHHHH, so the document is safe on a terminal
// too; bytes that are not UTF-8 (data stored by an older forwarder) as the
// text \xHH, the wire's own escape (common/escape.h).
std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      default: break;
    }
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    int n = Utf8SequenceLength(s.substr(i));
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\\\x%02x", c);
      ++i;
      continue;
    }
    uint32_t cp = Utf8CodePoint(s.substr(i), n);
    if (IsTerminalControl(cp)) {
      absl::StrAppendFormat(&out, "\\u%04x", cp);
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  out += "\"";
  return out;
}

constexpr size_t kAlignedName = 64;

std::string LeaksText(const v1::LeaksResponse& r, const TextOptions& o) {
  const std::string& p = o.prefix;
  std::string out;
  uint64_t total_bytes = 0, total_blocks = 0, rate = 0;
  uint64_t total_reachable_bytes = 0, total_reachable_blocks = 0;
  uint64_t total_lost_bytes = 0, total_lost_blocks = 0, total_unscanned_bytes = 0;
  uint64_t total_indirect_bytes = 0, total_indirect_blocks = 0;
  int n = r.leaks_size();
  for (int i = 0; i < n; ++i) {
    const v1::Leak& leak = r.leaks(i);
    total_bytes += leak.bytes();
    total_blocks += leak.blocks();
    const char* approx = leak.estimated() ? "~" : "";
    if (leak.estimated()) rate = std::max(rate, leak.sample_bytes());
    absl::StrAppend(&out, p, " ", approx, Plural(leak.bytes(), "byte", "bytes"), " in ", approx,
                    Plural(leak.blocks(), "block", "blocks"));
    if (leak.kind() == "growth") {
      absl::StrAppend(&out, " live and growing at ", Rate(leak.rate_bytes_per_hour()), " since ",
                      Clock(leak.since_unix_nanos()));
    } else {
      absl::StrAppend(&out, " never freed");
    }
    absl::StrAppend(&out, " (", i + 1, " of ", n, n == 1 ? " leak" : " leaks", ")");
    if (r.processes() > 1 || leak.processes() > 1) {
      absl::StrAppend(&out, ", in ", Plural(leak.processes(), "process", "processes"));
    }
    if (leak.internal()) {
      absl::StrAppend(&out, " [internal: ", Printable(leak.internal_reason()), "]");
    }
    if (!leak.incomplete().empty()) {
      absl::StrAppend(&out, " [incomplete: ", Printable(leak.incomplete()), "]");
    }
    if (leak.kind() == "exit" && leak.scanned_processes() == 0) {
      total_unscanned_bytes += leak.bytes();
    } else if (leak.kind() == "exit") {
      total_lost_bytes += leak.bytes() - leak.reachable_bytes();
      total_lost_blocks += leak.blocks() - leak.reachable_blocks();
      total_indirect_bytes += leak.indirect_bytes();
      total_indirect_blocks += leak.indirect_blocks();
    }
    if (leak.reachable_blocks() > 0) {
      total_reachable_bytes += leak.reachable_bytes();
      total_reachable_blocks += leak.reachable_blocks();
      if (leak.reachable_blocks() >= leak.blocks()) {
        absl::StrAppend(&out, " [still reachable at exit]");
      } else {
        absl::StrAppend(&out, " [still reachable at exit: ",
                        Plural(leak.reachable_bytes(), "byte", "bytes"), " in ",
                        Plural(leak.reachable_blocks(), "block", "blocks"), "]");
      }
    }
    if (leak.indirect_blocks() > 0) {
      if (leak.indirect_blocks() >= leak.blocks() - leak.reachable_blocks()) {
        absl::StrAppend(&out, " [indirectly lost]");
      } else {
        absl::StrAppend(&out, " [indirectly lost: ", Plural(leak.indirect_bytes(), "byte", "bytes"),
                        " in ", Plural(leak.indirect_blocks(), "block", "blocks"), "]");
      }
    }
    out += "\n";
    // The locations line up in a column after the names; a name longer
    // than kAlignedName (C++ names run to hundreds of characters) is left
    // out of the column's width rather than push it out for every frame, as
    // is a line with no location (the forwarder's notes: frames left out).
    std::vector<std::string> names;
    size_t width = 0;
    for (const auto& f : leak.stack().frames()) {
      names.push_back(Printable(f.function()));
      if (names.back().size() <= kAlignedName && !Location(f).empty()) {
        width = std::max(width, names.back().size());
      }
    }
    for (int j = 0; j < leak.stack().frames_size(); ++j) {
      const v1::Frame& f = leak.stack().frames(j);
      std::string loc = Location(f);
      std::string line = absl::StrCat(p, "    ", j == 0 ? "at " : "by ", names[j]);
      if (!loc.empty()) {
        line.append(names[j].size() <= width ? width - names[j].size() + 2 : 2, ' ');
        absl::StrAppend(&line, "(", loc, ")");
      }
      // Inlined into the frame below it: one call site in the machine code,
      // as pprof marks it.
      if (f.inlined()) absl::StrAppend(&line, " (inline)");
      if (j == leak.user_frame()) absl::StrAppend(&line, "   <- your code");
      absl::StrAppend(&out, line, "\n");
    }
    absl::StrAppend(&out, p, "\n");
  }
  absl::StrAppend(&out, p, " LEAK SUMMARY: ");
  int growth = 0;
  for (const v1::Leak& leak : r.leaks()) growth += leak.kind() == "growth";
  if (n == 0) {
    absl::StrAppend(&out, "no leaks");
  } else {
    const char* approx = rate ? "~" : "";
    absl::StrAppend(&out, approx, Plural(total_bytes, "byte", "bytes"), " in ", approx,
                    Plural(total_blocks, "block", "blocks"),
                    growth == n ? " live and growing" : growth ? " never freed or growing"
                                                              : " never freed",
                    ", from ", Plural(n, "stack", "stacks"));
  }
  if (r.processes() != 1) absl::StrAppend(&out, " across ", Plural(r.processes(), "process", "processes"));
  out += "\n";
  if (rate != 0) {
    absl::StrAppend(&out, p, " (~: estimated from allocations sampled once per ",
                    Thousands(rate), " bytes on average; unbiased, not exact)\n");
  }
  if (r.scanned() > 0 && n > 0) {
    // valgrind's categories: definitely lost, indirectly lost, still reachable.
    std::vector<std::string> parts;
    auto part = [&](const char* what, uint64_t bytes, uint64_t blocks, const char* why) {
      parts.push_back(absl::StrCat(what, " ", Plural(bytes, "byte", "bytes"), " in ",
                                   Plural(blocks, "block", "blocks"), ", ", why));
    };
    if (total_lost_blocks == 0) {
      parts.push_back("nothing lost");
    } else {
      part("definitely lost", total_lost_bytes - total_indirect_bytes,
           total_lost_blocks - total_indirect_blocks, "nothing pointed to them");
    }
    if (total_indirect_blocks > 0) {
      part("indirectly lost", total_indirect_bytes, total_indirect_blocks,
           "only lost blocks pointed to them");
    }
    if (total_reachable_blocks > 0) {
      part("still reachable", total_reachable_bytes, total_reachable_blocks,
           "pointed to by globals, thread-local storage or other reachable blocks");
    }
    if (total_unscanned_bytes > 0) {
      parts.push_back(absl::StrCat("not scanned ", Plural(total_unscanned_bytes, "byte", "bytes")));
    }
    if (total_reachable_blocks > 0) parts.push_back("--lost shows only what was lost");
    absl::StrAppend(&out, p, " (scanned at exit: ", absl::StrJoin(parts, "; "), ")\n");
  }
  if (r.reachable_hidden() > 0) {
    absl::StrAppend(&out, p, " (", Plural(r.reachable_hidden_bytes(), "byte", "bytes"), " in ",
                    Plural(r.reachable_hidden_blocks(), "block", "blocks"), " from ",
                    Plural(r.reachable_hidden(), "stack", "stacks"),
                    " never freed but still pointed to at exit are not shown (--lost): valgrind's "
                    "\"still reachable\")\n");
  }
  if (r.not_scanned() > 0) {
    std::vector<std::string> why;
    for (const std::string& w : r.not_scanned_reasons()) why.push_back(Printable(w));
    absl::StrAppend(&out, p, " (", Plural(r.not_scanned(), "process", "processes"),
                    r.not_scanned() == 1 ? " was" : " were",
                    " not scanned at exit, so nothing there is told still reachable: ",
                    absl::StrJoin(why, "; "), ")\n");
  }
  if (r.omitted() > 0) {
    absl::StrAppend(&out, p, " (", Plural(r.omitted(), "more leak", "more leaks"), " with ",
                    Plural(r.omitted_bytes(), "byte", "bytes"),
                    " not shown: the largest come first; --limit=N shows more)\n");
  }
  if (r.hidden() > 0) {
    absl::StrAppend(&out, p, " (", Plural(r.hidden_bytes(), "byte", "bytes"), " in ",
                    Plural(r.hidden(), "stack", "stacks"),
                    " allocated for the Go runtime and the C library itself are hidden; --all shows "
                    "them)\n");
  }
  if (r.exec_hidden() > 0) {
    absl::StrAppend(&out, p, " (", Plural(r.exec_hidden_bytes(), "byte", "bytes"), " in ",
                    Plural(r.exec_hidden_blocks(), "block", "blocks"), " that ",
                    Plural(r.exec_hidden(), "program", "programs"),
                    " held when replaced by exec are hidden: the exec freed them, as an exit "
                    "does; --all shows them)\n");
  }
  if (r.dropped_events() > 0) {
    absl::StrAppend(&out, p, " WARNING: ", Thousands(r.dropped_events()),
                    " events were dropped because the forwarder fell behind: this report is "
                    "incomplete (CGOHEAP_RING_MB=N gives each thread N MiB of ring, 2 by "
                    "default)\n");
  }
  if (r.foreign_allocator() > 0) {
    std::vector<std::string> fns;
    for (const std::string& f : r.foreign_allocator_functions()) fns.push_back(Printable(f));
    absl::StrAppend(&out, p, " WARNING: ", Plural(r.foreign_allocator(), "process", "processes"),
                    r.foreign_allocator() == 1 ? " allocates" : " allocate",
                    " through functions cgoheap's agent does not see (", absl::StrJoin(fns, ", "),
                    ": defined by the program itself, as a statically linked jemalloc, tcmalloc, "
                    "mimalloc or sanitizer runtime is, or by a library preloaded before the "
                    "agent): what is "
                    "allocated through them never reaches cgoheap, and its leaks cannot be "
                    "shown\n");
  }
  if (r.go_crossing_unknown() > 0) {
    absl::StrAppend(&out, p, " WARNING: ", Plural(r.go_crossing_unknown(), "process", "processes"),
                    " built by a Go release whose cgo calls this cgoheap does not understand: "
                    "their stacks stop where C was called from Go (a newer cgoheap may know it)\n");
  }
  if (r.damaged_rings() > 0) {
    absl::StrAppend(&out, p, " WARNING: ", Plural(r.damaged_rings(), "process", "processes"),
                    r.damaged_rings() == 1 ? " damaged its" : " damaged their",
                    " cgoheap ring (truncated it, or wrote into it): events after that point were "
                    "not read, so leaks here may be wrong or missing (cgoheap ps says which and "
                    "why)\n");
  }
  if (r.unwind_failures() > 0) {
    absl::StrAppend(&out, p, " WARNING: ", Plural(r.unwind_failures(), "allocation", "allocations"),
                    " had stacks cut short (the Go frames above a cgo call, or the callers of C "
                    "code without unwind information, could not be recovered): their leaks are "
                    "still shown, and marked incomplete where their Go frames are missing\n");
  }
  return out;
}

std::string LeakJson(const v1::Leak& leak) {
  std::vector<std::string> frames;
  for (const v1::Frame& f : leak.stack().frames()) {
    frames.push_back(absl::StrCat("{\"function\":", JsonString(f.function()),
                                  ",\"file\":", JsonString(f.file()), ",\"line\":", f.line(),
                                  ",\"object\":", JsonString(f.object()),
                                  f.inlined() ? ",\"inlined\":true" : "", "}"));
  }
  std::vector<std::string> pids;
  for (const auto& id : leak.process_ids()) pids.push_back(JsonString(id));
  return absl::StrCat(
      "{\"kind\":", JsonString(leak.kind()), ",\"bytes\":", leak.bytes(),
      ",\"blocks\":", leak.blocks(), ",\"processes\":", leak.processes(),
      ",\"rate_bytes_per_hour\":", absl::StrFormat("%.0f", leak.rate_bytes_per_hour()),
      ",\"since_unix_nanos\":", leak.since_unix_nanos(),
      ",\"estimated\":", leak.estimated() ? "true" : "false",
      ",\"sample_bytes\":", leak.sample_bytes(),
      ",\"internal\":", leak.internal() ? "true" : "false",
      ",\"internal_reason\":", JsonString(leak.internal_reason()),
      ",\"user_frame\":", leak.user_frame(),
      ",\"user_frames\":[", absl::StrJoin(leak.user_frames(), ","), "]",
      ",\"user_code\":", JsonString(leak.user_code()),
      ",\"incomplete\":", JsonString(leak.incomplete()),
      ",\"scanned_processes\":", leak.scanned_processes(),
      ",\"reachable_bytes\":", leak.reachable_bytes(),
      ",\"reachable_blocks\":", leak.reachable_blocks(),
      ",\"indirect_bytes\":", leak.indirect_bytes(),
      ",\"indirect_blocks\":", leak.indirect_blocks(),
      ",\"stack_id\":", JsonString(absl::StrFormat("%016x", leak.stack().id())),
      ",\"process_ids\":[", absl::StrJoin(pids, ","), "]",
      ",\"frames\":[", absl::StrJoin(frames, ","), "]}");
}

std::string LeaksJson(const v1::LeaksResponse& r, std::string_view extra) {
  std::vector<std::string> leaks;
  for (const v1::Leak& leak : r.leaks()) leaks.push_back(LeakJson(leak));
  std::vector<std::string> foreign;
  for (const std::string& f : r.foreign_allocator_functions()) foreign.push_back(JsonString(f));
  std::vector<std::string> why;
  for (const std::string& w : r.not_scanned_reasons()) why.push_back(JsonString(w));
  return absl::StrCat("{\"leaks\":[", absl::StrJoin(leaks, ","), "],\"processes\":", r.processes(),
                      ",\"hidden\":", r.hidden(), ",\"hidden_bytes\":", r.hidden_bytes(),
                      ",\"omitted\":", r.omitted(), ",\"omitted_bytes\":", r.omitted_bytes(),
                      ",\"dropped_events\":", r.dropped_events(),
                      ",\"unwind_failures\":", r.unwind_failures(),
                      ",\"go_crossing_unknown\":", r.go_crossing_unknown(),
                      ",\"damaged_rings\":", r.damaged_rings(),
                      ",\"foreign_allocator\":", r.foreign_allocator(),
                      ",\"foreign_allocator_functions\":[", absl::StrJoin(foreign, ","), "]",
                      ",\"scanned\":", r.scanned(), ",\"not_scanned\":", r.not_scanned(),
                      ",\"not_scanned_reasons\":[", absl::StrJoin(why, ","), "]",
                      ",\"reachable_hidden\":", r.reachable_hidden(),
                      ",\"reachable_hidden_bytes\":", r.reachable_hidden_bytes(),
                      ",\"reachable_hidden_blocks\":", r.reachable_hidden_blocks(),
                      ",\"exec_hidden\":", r.exec_hidden(),
                      ",\"exec_hidden_bytes\":", r.exec_hidden_bytes(),
                      ",\"exec_hidden_blocks\":", r.exec_hidden_blocks(), std::string(extra),
                      "}\n");
}

// "handle (/src/main.go:16)": the user's frame of a stack, else the allocator's caller.
std::string Site(const v1::Stack& stack, int user_frame) {
  int i = user_frame >= 0 ? user_frame : std::min(1, stack.frames_size() - 1);
  if (i < 0) return "??";
  const v1::Frame& f = stack.frames(i);
  std::string loc = Location(f);
  return loc.empty() ? Printable(f.function())
                     : absl::StrCat(Printable(f.function()), " (", loc, ")");
}

std::string TopText(const v1::TopResponse& r, const std::string& by) {
  std::string out = absl::StrFormat("%16s  %10s  %5s  %s\n", "LIVE BYTES", "BLOCKS", "PROCS",
                                    by == "stack" ? "ALLOCATED AT (stack id)" : "ALLOCATED AT");
  for (const v1::TopEntry& e : r.entries()) {
    std::string where;
    if (by == "stack") {
      where = absl::StrFormat("%s  [%016x]", Site(e.stack(), -1), e.stack().id());
      // the first frame of the user's code reads better than the allocator's caller
      for (int i = 1; i < e.stack().frames_size(); ++i) {
        const v1::Frame& f = e.stack().frames(i);
        if (f.go() && f.function().rfind("runtime.", 0) != 0 && f.file().find("_cgo_") == std::string::npos) {
          where = absl::StrFormat("%s  <- %s (%s)  [%016x]", Site(e.stack(), -1),
                                  Printable(f.function()), Location(f), e.stack().id());
          break;
        }
      }
    } else if (by == "function") {
      where = Printable(e.function());
    } else {
      where = absl::StrCat(Printable(e.function()), " (", Printable(e.file()), ":", e.line(), ")");
    }
    absl::StrAppendFormat(&out, "%16s  %10s  %5d  %s\n",
                          absl::StrCat(e.estimated() ? "~" : "", Thousands(e.bytes())),
                          Thousands(e.blocks()), e.processes(), where);
  }
  absl::StrAppend(&out, "(", Thousands(r.total_bytes()), " bytes live in ",
                  Plural(r.processes(), "running process", "running processes"), ")\n");
  return out;
}

std::string TopJson(const v1::TopResponse& r) {
  std::vector<std::string> entries;
  for (const v1::TopEntry& e : r.entries()) {
    std::vector<std::string> frames;
    for (const v1::Frame& f : e.stack().frames()) {
      frames.push_back(absl::StrCat("{\"function\":", JsonString(f.function()), ",\"file\":",
                                    JsonString(f.file()), ",\"line\":", f.line(), "}"));
    }
    entries.push_back(absl::StrCat(
        "{\"bytes\":", e.bytes(), ",\"blocks\":", e.blocks(), ",\"processes\":", e.processes(),
        ",\"estimated\":", e.estimated() ? "true" : "false",
        ",\"function\":", JsonString(e.function()), ",\"file\":", JsonString(e.file()),
        ",\"line\":", e.line(), ",\"frames\":[", absl::StrJoin(frames, ","), "]}"));
  }
  return absl::StrCat("{\"entries\":[", absl::StrJoin(entries, ","), "],\"processes\":",
                      r.processes(), ",\"total_bytes\":", r.total_bytes(), "}\n");
}

std::string WatchLine(const v1::Leak& leak) {
  std::string when = leak.kind() == "growth"
                         ? absl::StrCat("growing at ", Rate(leak.rate_bytes_per_hour()), " since ",
                                        Clock(leak.since_unix_nanos()))
                         : "never freed at exit";
  return absl::StrCat(leak.kind(), ": ", leak.estimated() ? "~" : "",
                      Plural(leak.bytes(), "byte", "bytes"), " in ",
                      Plural(leak.blocks(), "block", "blocks"), " ", when, ", at ",
                      Site(leak.stack(), leak.user_frame()), ", process ",
                      leak.process_ids_size() ? Printable(leak.process_ids(0)) : "?", "\n");
}

std::string ProcessesText(const v1::ListProcessesResponse& list) {
  std::string out = absl::StrFormat("%-16s  %7s  %-14s  %-10s  %6s  %14s  %10s  %10s  %10s  %-10s  %s\n",
                                    "PROCESS", "PID", "SERVICE", "STATE", "MODE", "LIVE BYTES",
                                    "EVENTS", "DROPPED", "CUT SHORT", "GO", "COMMAND");
  for (const auto& p : list.processes()) {
    std::string mode = p.hello().sample_bytes() == 0
                           ? "exact"
                           : absl::StrCat("1/", p.hello().sample_bytes());
    std::string go = p.hello().go_version().empty() ? "-" : Printable(p.hello().go_version());
    std::vector<std::string> args;
    for (const std::string& a : p.hello().args()) args.push_back(Printable(a));
    if (p.hello().go_crossing_unknown()) go += "!";
    absl::StrAppendFormat(&out, "%-16s  %7d  %-14s  %-10s  %6s  %14s  %10s  %10s  %10s  %-10s  %s\n",
                          p.process_id(), p.hello().pid(), Printable(p.hello().service()),
                          StateText(p), mode,
                          absl::StrCat(p.estimated() ? "~" : "", Thousands(p.live_bytes())),
                          Thousands(p.events()), Thousands(p.dropped_events()),
                          Thousands(p.unwind_failures()), go, absl::StrJoin(args, " "));
  }
  if (list.processes_size() == 0) out += "(no processes)\n";
  for (const auto& p : list.processes()) {
    if (p.hello().go_crossing_unknown()) {
      absl::StrAppend(&out, "WARNING: process ", p.process_id(), " was built by ",
                      p.hello().go_version().empty() ? "a Go release"
                                                     : Printable(p.hello().go_version()),
                      " (marked !), whose cgo calls this cgoheap does not understand: its stacks "
                      "stop where C was called from Go\n");
    }
    if (p.hello().foreign_allocator_size() > 0) {
      std::vector<std::string> fns;
      for (const std::string& f : p.hello().foreign_allocator()) fns.push_back(Printable(f));
      absl::StrAppend(&out, "WARNING: process ", p.process_id(), " (pid ", p.hello().pid(),
                      "): its ", absl::StrJoin(fns, ", "),
                      " never reach cgoheap's agent (the program defines them itself, or a "
                      "library preloaded before the agent does): what it allocates through them "
                      "is not seen\n");
    }
    if (!p.ring_damage().empty()) {
      absl::StrAppend(&out, "WARNING: process ", p.process_id(), " (pid ", p.hello().pid(),
                      "): ", Printable(p.ring_damage()),
                      ", so its events after that point were not read: its live bytes and leaks "
                      "miss them\n");
    }
  }
  return out;
}

std::string ProcessesJson(const v1::ListProcessesResponse& list) {
  std::vector<std::string> procs;
  for (const auto& p : list.processes()) {
    std::vector<std::string> args;
    for (const auto& a : p.hello().args()) args.push_back(JsonString(a));
    std::vector<std::string> foreign;
    for (const auto& f : p.hello().foreign_allocator()) foreign.push_back(JsonString(f));
    procs.push_back(absl::StrCat(
        "{\"process_id\":", JsonString(p.process_id()), ",\"pid\":", p.hello().pid(),
        ",\"service\":", JsonString(p.hello().service()), ",\"host\":", JsonString(p.hello().host()),
        ",\"executable\":", JsonString(p.hello().executable()),
        ",\"build_id\":", JsonString(p.hello().build_id()), ",\"state\":", JsonString(p.state()),
        ",\"exit_code\":", p.end().exit_code(), ",\"signal\":", p.end().signal(),
        ",\"sample_bytes\":", p.hello().sample_bytes(), ",\"live_bytes\":", p.live_bytes(),
        ",\"estimated\":", p.estimated() ? "true" : "false",
        ",\"live_blocks\":", p.live_blocks(), ",\"events\":", p.events(),
        ",\"dropped_events\":", p.dropped_events(),
        ",\"unwind_failures\":", p.unwind_failures(),
        ",\"go_version\":", JsonString(p.hello().go_version()),
        ",\"go_main_module\":", JsonString(p.hello().go_main_module()),
        ",\"go_crossing_unknown\":", p.hello().go_crossing_unknown() ? "true" : "false",
        ",\"foreign_allocator\":[", absl::StrJoin(foreign, ","), "]",
        ",\"ring_damage\":", JsonString(p.ring_damage()),
        ",\"clock\":", JsonString(p.hello().clock()),
        ",\"exit_scan\":",
        p.end().has_exit_scan()
            ? absl::StrCat("{\"done\":", p.end().exit_scan().done() ? "true" : "false",
                           ",\"skipped\":", JsonString(p.end().exit_scan().skipped()),
                           ",\"root_bytes\":", p.end().exit_scan().root_bytes(),
                           ",\"seconds\":", absl::StrFormat("%.6f", p.end().exit_scan().seconds()),
                           "}")
            : "null",
        ",\"args\":[", absl::StrJoin(args, ","),
        "]}"));
  }
  return absl::StrCat("{\"processes\":[", absl::StrJoin(procs, ","), "]}\n");
}

}  // namespace cgoheap::client
