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
  f.forced = "tsc";  // only "counter" forces anything
  EXPECT_EQ(DecideClock(f), Clock::kTsc);
}

}  // namespace
}  // namespace cgoheap::agent
