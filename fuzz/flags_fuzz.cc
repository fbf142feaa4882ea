// Command-line flags and durations (common/flags.h): whatever a user, a
// script or a unit file passes. Input: arguments separated by NUL bytes.
//
// Checked beyond memory safety: a flag that parsed holds a value inside its
// range; an accepted duration is finite and positive; FormatDuration of it
// reads back as (nearly) the same duration.
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/flags.h"
#include "fuzz/fuzz_input.h"

namespace {

void CheckDuration(const std::string& text) {
  absl::StatusOr<double> d = cgoheap::ParseDuration(text);
  if (!d.ok()) return;
  if (!(*d > 0) || !std::isfinite(*d)) {
    fprintf(stderr, "ParseDuration(\"%s\") = %g: not a positive duration\n", text.c_str(), *d);
    abort();
  }
  std::string shown = cgoheap::FormatDuration(*d);
  absl::StatusOr<double> again = cgoheap::ParseDuration(shown);
  if (!again.ok() || std::fabs(*again - *d) > 1e-5 * *d) {
    fprintf(stderr, "FormatDuration(%g) = \"%s\" does not read back\n", *d, shown.c_str());
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cgoheap::fuzz::FuzzInput in(data, size);
  const bool stop_at_positional = in.Bool();
  std::string rest = in.Rest();
  std::vector<std::string> args;
  for (size_t start = 0; args.size() < 16;) {
    size_t nul = rest.find('\0', start);
    args.push_back(rest.substr(start, nul == std::string::npos ? std::string::npos : nul - start));
    if (nul == std::string::npos) break;
    start = nul + 1;
  }
  for (const std::string& a : args) {
    CheckDuration(a);
    size_t eq = a.find('=');
    if (eq != std::string::npos) CheckDuration(a.substr(eq + 1));
  }

  std::string server = "127.0.0.1:7070";
  bool json = false;
  uint64_t count = 10;
  double window = 600, timeout = 5;
  cgoheap::FlagSet flags("cgoheap fuzz");
  flags.String("server", &server, "ADDR", "server address");
  flags.Bool("json", &json, "JSON output");
  flags.Uint("count", &count, "N", "how many", 1, 1000);
  flags.Duration("window", &window, "growth window", 1, 7 * 24 * 3600);
  flags.Duration("timeout", &timeout, "timeout", 0.001, 3600);
  absl::StatusOr<std::vector<std::string>> parsed = flags.Parse(args, stop_at_positional);
  if (parsed.ok()) {
    if (count < 1 || count > 1000 || !(window >= 1 && window <= 7 * 24 * 3600) ||
        !(timeout >= 0.001 && timeout <= 3600) || parsed->size() > args.size()) {
      abort();
    }
  } else {
    FUZZ_CHECK(!parsed.status().message().empty(), "a refusal that does not say why");
  }
  FUZZ_CHECK(!flags.Usage().empty(), "no usage text");
  return 0;
}
