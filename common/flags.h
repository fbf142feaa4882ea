// A strict command-line flag parser for cgoheap and cgoheapd.
//
// Accepts --name=value and --name value (booleans: --name, --name=true|false;
// a choice with a bare form: --name, --name=CHOICE).
// Anything unknown or malformed is an error that names the flag and the
// command, so the user knows what to fix; nothing is silently ignored.
//
//   FlagSet flags("cgoheap leaks");
//   std::string server;
//   flags.String("server", &server, "ADDR", "cgoheapd address");
//   absl::StatusOr<std::vector<std::string>> rest = flags.Parse(args);
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cgoheap {

// Not thread-safe.
class FlagSet {
 public:
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  void String(const std::string& name, std::string* dst, const std::string& metavar,
              const std::string& help);
  void Bool(const std::string& name, bool* dst, const std::string& help);
  // One of choices; given bare (--name, no value), bare_value. As a boolean,
  // a bare flag never takes the next argument for its value.
  void Choice(const std::string& name, std::string* dst, const std::vector<std::string>& choices,
              const std::string& bare_value, const std::string& help);
  // Every number and duration has the range that makes sense for it; a value
  // outside is an error that gives the range.
  void Uint(const std::string& name, uint64_t* dst, const std::string& metavar,
            const std::string& help, uint64_t min, uint64_t max);
  // Durations like 90s, 5m, 1h, 250ms; stored as seconds.
  void Duration(const std::string& name, double* seconds, const std::string& help,
                double min_seconds, double max_seconds);

  // Parses args. With stop_at_positional, parsing ends at the first argument
  // that is not a flag, or after "--"; the rest is returned untouched.
  // Otherwise positional arguments are an error. --help returns a
  // kCancelled status whose message is the usage text.
  absl::StatusOr<std::vector<std::string>> Parse(const std::vector<std::string>& args,
                                                 bool stop_at_positional = false);
  std::string Usage() const;

 private:
  struct Flag {
    std::string name, metavar, help;
    bool is_bool = false;
    std::function<absl::Status(const std::string&)> set;
  };
  const Flag* Find(const std::string& name) const;

  std::string command_;
  std::vector<Flag> flags_;
};

// "5m" -> 300. Accepts ms, s, m, h; a bare number is seconds. Finite and
// positive only.
absl::StatusOr<double> ParseDuration(const std::string& text);
// 300 -> "5m", 0.25 -> "250ms", 604800 -> "168h": the largest unit that
// divides it, as ParseDuration reads it.
std::string FormatDuration(double seconds);

}  // namespace cgoheap
