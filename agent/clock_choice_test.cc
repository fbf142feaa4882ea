#include "agent/clock_choice.h"

#include <gtest/gtest.h>

namespace cgoheap::agent {
namespace {

using ring::Clock;

TEST(ClockChoiceTest, TheTscWhereTheKernelKeepsTimeWithItOrStillOffersItAndItIsInvariant) {
  ClockFacts f;
  f.rdtscp = true;
  f.current = "tsc\n";
  f.available = "tsc hpet acpi_pm \n";
  EXPECT_EQ(DecideClock(f), Clock::kTsc);
  // A cloud VM: kvm-clock keeps time, the TSC is offered and invariant.
  f.current = "kvm-clock\n";
  f.available = "kvm-clock tsc acpi_pm \n";
  f.invariant_tsc = true;
  EXPECT_EQ(DecideClock(f), Clock::kTsc);
  // Offered but not invariant (its rate changes with the CPU's): counter.
  f.invariant_tsc = false;
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  // Invariant, but withdrawn by the kernel (found unsynchronized): counter.
  f.invariant_tsc = true;
  f.available = "kvm-clock acpi_pm \n";
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  // Names that merely contain "tsc" are not the TSC.
  f.available = "kvm-clock tsc-early notsc\n";
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  f.current = "tsc-early";
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  // Unreadable sysfs: counter.
  f.current = "";
  f.available = "";
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
}

TEST(ClockChoiceTest, WithoutRdtscpOrWhenForcedTheCounter) {
  ClockFacts f;
  f.current = "tsc\n";
  f.available = "tsc\n";
  f.invariant_tsc = true;
  f.rdtscp = false;
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  f.rdtscp = true;
  f.forced = "counter";
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  f.forced = "tsc";
  EXPECT_EQ(DecideClock(f), Clock::kTsc);
  f.rdtscp = false;  // asked for, but unusable
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
}

// Stripes need no clock: every machine with CMPXCHG16B gets them, whatever
// its clocksource, unless the TSC or the counter is asked for.
TEST(ClockChoiceTest, StripesWhereverCmpxchg16bIsUnlessAClockIsAskedFor) {
  ClockFacts f;
  f.cx16 = true;
  f.rdtscp = true;
  f.invariant_tsc = true;
  for (const char* current : {"tsc\n", "kvm-clock\n", "hpet\n", ""}) {
    f.current = current;
    f.available = "kvm-clock tsc acpi_pm\n";
    EXPECT_EQ(DecideClock(f), Clock::kStripes) << current;
  }
  f.forced = "stripes";
  EXPECT_EQ(DecideClock(f), Clock::kStripes);
  f.forced = "counter";
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  f.forced = "tsc";
  f.current = "tsc\n";
  EXPECT_EQ(DecideClock(f), Clock::kTsc);
  f.current = "kvm-clock\n";
  f.available = "kvm-clock acpi_pm\n";  // the TSC withdrawn: asking does not make it usable
  EXPECT_EQ(DecideClock(f), Clock::kCounter);
  // No CMPXCHG16B: the clock-based choice.
  f.forced = nullptr;
  f.cx16 = false;
  f.current = "tsc\n";
  EXPECT_EQ(DecideClock(f), Clock::kTsc);
}

}  // namespace
}  // namespace cgoheap::agent
