#include "common/flags.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cgoheap {

void FlagSet::String(const std::string& name, std::string* dst, const std::string& metavar,
                     const std::string& help) {
  flags_.push_back({name, metavar, help, false, [dst](const std::string& v) {
                      *dst = v;
                      return absl::OkStatus();
                    }});
}

void FlagSet::Bool(const std::string& name, bool* dst, const std::string& help) {
  flags_.push_back({name, "", help, true, [dst, name](const std::string& v) {
                      if (v == "true" || v == "1" || v.empty()) {
                        *dst = true;
                      } else if (v == "false" || v == "0") {
                        *dst = false;
                      } else {
                        return absl::InvalidArgumentError(
                            absl::StrCat("--", name, " takes true or false, not '", v, "'"));
                      }
                      return absl::OkStatus();
                    }});
}

void FlagSet::Choice(const std::string& name, std::string* dst,
                     const std::vector<std::string>& choices, const std::string& bare_value,
                     const std::string& help) {
  const std::string list = absl::StrJoin(choices, "|");  // the metavar: --name[=a|b]
  flags_.push_back({name, list, help, true, [=](const std::string& v) {
                      const std::string& value = v.empty() ? bare_value : v;
                      if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "--", name, " takes ", absl::StrJoin(choices, ", "), ", not '", v, "'"));
                      }
                      *dst = value;
                      return absl::OkStatus();
                    }});
}

void FlagSet::Uint(const std::string& name, uint64_t* dst, const std::string& metavar,
                   const std::string& help, uint64_t min, uint64_t max) {
  flags_.push_back({name, metavar, help, false, [=](const std::string& v) {
                      uint64_t n;
                      if (!absl::SimpleAtoi(v, &n)) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "--", name, " takes a non-negative whole number, not '", v, "'"));
                      }
                      if (n < min || n > max) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "--", name, "=", v, " is out of range: use ", min, " to ", max));
                      }
                      *dst = n;
                      return absl::OkStatus();
                    }});
}

void FlagSet::Duration(const std::string& name, double* seconds, const std::string& help,
                       double min_seconds, double max_seconds) {
  flags_.push_back({name, "DURATION", help, false, [=](const std::string& v) {
                      absl::StatusOr<double> d = ParseDuration(v);
                      if (!d.ok()) {
                        return absl::InvalidArgumentError(
                            absl::StrCat("--", name, ": ", d.status().message()));
                      }
                      if (*d < min_seconds || *d > max_seconds) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "--", name, "=", v, " is out of range: use ",
                            FormatDuration(min_seconds), " to ", FormatDuration(max_seconds)));
                      }
                      *seconds = *d;
                      return absl::OkStatus();
                    }});
}

const FlagSet::Flag* FlagSet::Find(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::StatusOr<std::vector<std::string>> FlagSet::Parse(const std::vector<std::string>& args,
                                                        bool stop_at_positional) {
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      rest.assign(args.begin() + i + 1, args.end());
      return rest;
    }
    if (!absl::StartsWith(a, "-") || a == "-") {
      if (stop_at_positional) {
        rest.assign(args.begin() + i, args.end());
        return rest;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", a, "' for ", command_, " (see ", command_,
                       " --help)"));
    }
    std::string body = a.substr(absl::StartsWith(a, "--") ? 2 : 1);
    std::string name = body, value;
    bool has_value = false;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    if (name == "help" || name == "h") return absl::CancelledError(Usage());
    const Flag* f = Find(name);
    if (f == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " for ", command_,
                                                     " (see ", command_, " --help)"));
    }
    if (!has_value && !f->is_bool) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value: --", name, "=", f->metavar));
      }
      value = args[++i];
    }
    absl::Status st = f->set(value);
    if (!st.ok()) return st;
  }
  return rest;
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("Flags of ", command_, ":\n");
  for (const Flag& f : flags_) {
    std::string left =
        f.metavar.empty() ? absl::StrCat("  --", f.name)
        : f.is_bool       ? absl::StrCat("  --", f.name, "[=", f.metavar, "]")  // a choice
                          : absl::StrCat("  --", f.name, "=", f.metavar);
    if (left.size() < 28) left.resize(28, ' ');
    absl::StrAppend(&out, left, " ", f.help, "\n");
  }
  return out;
}

absl::StatusOr<double> ParseDuration(const std::string& text) {
  struct Unit {
    const char* suffix;
    double seconds;
  };
  static constexpr Unit kUnits[] = {{"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}};
  for (const Unit& u : kUnits) {
    if (absl::EndsWith(text, u.suffix)) {
      std::string num = text.substr(0, text.size() - strlen(u.suffix));
      double v;
      // The product is checked, not v: "4e-324ms" is a positive number of
      // milliseconds and 0 seconds.
      if (absl::SimpleAtod(num, &v) && v * u.seconds > 0 && std::isfinite(v * u.seconds) &&
          !absl::EndsWith(num, "m")) {
        return v * u.seconds;
      }
    }
  }
  double v;
  if (absl::SimpleAtod(text, &v) && v > 0 && std::isfinite(v)) return v;
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not a duration: use a positive number with ms, s, m or h"));
}

std::string FormatDuration(double seconds) {
  struct Unit {
    const char* suffix;
    double seconds;
  };
  static constexpr Unit kUnits[] = {{"h", 3600}, {"m", 60}, {"s", 1}};
  for (const Unit& u : kUnits) {
    double n = seconds / u.seconds;
    if (n >= 1 && n == std::floor(n)) return absl::StrCat(n, u.suffix);
  }
  return absl::StrCat(seconds * 1000, "ms");
}

}  // namespace cgoheap
