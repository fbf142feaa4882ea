#include "common/flags.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

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

void FlagSet::Uint(const std::string& name, uint64_t* dst, const std::string& metavar,
                   const std::string& help) {
  flags_.push_back({name, metavar, help, false, [dst, name](const std::string& v) {
                      if (!absl::SimpleAtoi(v, dst)) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "--", name, " takes a non-negative whole number, not '", v, "'"));
                      }
                      return absl::OkStatus();
                    }});
}

void FlagSet::Duration(const std::string& name, double* seconds, const std::string& help) {
  flags_.push_back({name, "DURATION", help, false, [seconds, name](const std::string& v) {
                      absl::StatusOr<double> d = ParseDuration(v);
                      if (!d.ok()) {
                        return absl::InvalidArgumentError(
                            absl::StrCat("--", name, ": ", d.status().message()));
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
    std::string left = absl::StrCat("  --", f.name, f.metavar.empty() ? "" : "=", f.metavar);
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
      if (absl::SimpleAtod(num, &v) && v > 0 && !absl::EndsWith(num, "m")) return v * u.seconds;
    }
  }
  double v;
  if (absl::SimpleAtod(text, &v) && v > 0) return v;
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not a duration: use a positive number with ms, s, m or h"));
}

}  // namespace cgoheap
