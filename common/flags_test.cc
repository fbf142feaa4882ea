#include "common/flags.h"

#include <gtest/gtest.h>

namespace cgoheap {
namespace {

TEST(FlagsTest, ParsesEveryFormAndStopsAtTheProgram) {
  FlagSet f("cgoheap run");
  std::string server;
  bool json = false, all = true;
  uint64_t rate = 7;
  double window = 0;
  f.String("server", &server, "ADDR", "");
  f.Bool("json", &json, "");
  f.Bool("all", &all, "");
  f.Uint("sample-bytes", &rate, "N", "", 0, 1 << 30);
  f.Duration("window", &window, "", 1, 3600);
  auto rest = f.Parse({"--server", "h:1", "--json", "--all=false", "--sample-bytes=524288",
                       "--window=5m", "prog", "--json", "x"},
                      true);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(server, "h:1");
  EXPECT_TRUE(json);
  EXPECT_FALSE(all);
  EXPECT_EQ(rate, 524288u);
  EXPECT_EQ(window, 300);
  EXPECT_EQ(*rest, (std::vector<std::string>{"prog", "--json", "x"}));
  auto after_dashes = f.Parse({"--json", "--", "--not-a-flag"}, true);
  ASSERT_TRUE(after_dashes.ok());
  EXPECT_EQ(*after_dashes, (std::vector<std::string>{"--not-a-flag"}));
}

TEST(FlagsTest, ErrorsNameTheFlagAndTheCommand) {
  FlagSet f("cgoheap leaks");
  std::string s;
  uint64_t n;
  bool b;
  f.String("server", &s, "ADDR", "");
  f.Uint("n", &n, "N", "", 1, 100);
  f.Bool("b", &b, "");
  EXPECT_EQ(f.Parse({"--nope"}).status().message(),
            "unknown flag --nope for cgoheap leaks (see cgoheap leaks --help)");
  EXPECT_EQ(f.Parse({"--server"}).status().message(), "flag --server needs a value: --server=ADDR");
  EXPECT_EQ(f.Parse({"--n=-3"}).status().message(),
            "--n takes a non-negative whole number, not '-3'");
  EXPECT_EQ(f.Parse({"--n=0"}).status().message(), "--n=0 is out of range: use 1 to 100");
  EXPECT_EQ(f.Parse({"--n=101"}).status().message(), "--n=101 is out of range: use 1 to 100");
  EXPECT_EQ(f.Parse({"--b=maybe"}).status().message(), "--b takes true or false, not 'maybe'");
  EXPECT_EQ(f.Parse({"stray"}).status().message(),
            "unexpected argument 'stray' for cgoheap leaks (see cgoheap leaks --help)");
  auto help = f.Parse({"--help"});
  EXPECT_EQ(help.status().code(), absl::StatusCode::kCancelled);
  EXPECT_NE(help.status().message().find("--server=ADDR"), std::string::npos);
}

// A choice given bare takes its bare value and never the next argument (the
// program); given a value, one of its choices, or an error that lists them.
TEST(FlagsTest, ChoicesBareOrGiven) {
  FlagSet f("cgoheap run");
  std::string children = "unset";
  f.Choice("trace-children", &children, {"go", "all", "none"}, "go", "which children");
  auto rest = f.Parse({"--trace-children", "go", "run", "."}, true);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(children, "go");
  EXPECT_EQ(*rest, (std::vector<std::string>{"go", "run", "."}));
  ASSERT_TRUE(f.Parse({"--trace-children=all", "--", "sh"}, true).ok());
  EXPECT_EQ(children, "all");
  ASSERT_TRUE(f.Parse({"--trace-children=none"}, true).ok());
  EXPECT_EQ(children, "none");
  EXPECT_EQ(f.Parse({"--trace-children=some"}).status().message(),
            "--trace-children takes go, all, none, not 'some'");
  EXPECT_NE(f.Usage().find("--trace-children[=go|all|none] which children"), std::string::npos)
      << f.Usage();
}

TEST(FlagsTest, Durations) {
  EXPECT_EQ(*ParseDuration("250ms"), 0.25);
  EXPECT_EQ(*ParseDuration("90s"), 90);
  EXPECT_EQ(*ParseDuration("2h"), 7200);
  EXPECT_EQ(*ParseDuration("12"), 12);
  EXPECT_FALSE(ParseDuration("soon").ok());
  EXPECT_FALSE(ParseDuration("-5s").ok());
  EXPECT_FALSE(ParseDuration("0").ok());
  EXPECT_FALSE(ParseDuration("inf").ok());
  EXPECT_FALSE(ParseDuration("infs").ok());
  EXPECT_FALSE(ParseDuration("nan").ok());
  EXPECT_FALSE(ParseDuration("1e400ms").ok());
  // Positive milliseconds that are 0 seconds (fuzz/crashes/flags/denormal-milliseconds).
  EXPECT_FALSE(ParseDuration("4e-324ms").ok());
  EXPECT_EQ(FormatDuration(300), "5m");
  EXPECT_EQ(FormatDuration(604800), "168h");
  EXPECT_EQ(FormatDuration(90), "90s");
  EXPECT_EQ(FormatDuration(0.25), "250ms");
}

TEST(FlagsTest, DurationsOutsideTheirRangeAreRefused) {
  FlagSet f("cgoheapd");
  double window = 600;
  f.Duration("leak-window", &window, "", 1, 7 * 24 * 3600);
  EXPECT_EQ(f.Parse({"--leak-window=1e-12s"}).status().message(),
            "--leak-window=1e-12s is out of range: use 1s to 168h");
  EXPECT_EQ(f.Parse({"--leak-window=30d"}).status().message(),
            "--leak-window: '30d' is not a duration: use a positive number with ms, s, m or h");
  EXPECT_EQ(f.Parse({"--leak-window=inf"}).status().message(),
            "--leak-window: 'inf' is not a duration: use a positive number with ms, s, m or h");
  EXPECT_EQ(window, 600);  // untouched by every refusal
  ASSERT_TRUE(f.Parse({"--leak-window=2h"}).ok());
  EXPECT_EQ(window, 7200);
}

}  // namespace
}  // namespace cgoheap
