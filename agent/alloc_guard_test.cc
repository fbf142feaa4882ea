// The allocation guard: in a guard build, entering the allocator from a
// hook's recording path aborts. (Real programs run under the guard build in
// tests/e2e/run_test.cc, which shows the hooks never trip it.)
#include <gtest/gtest.h>

#include "agent/agent.h"

namespace cgoheap::agent {
namespace {

TEST(AllocGuardDeathTest, AllocatingInsideAHookAborts) {
  static_assert(kAllocGuard, "this test is built against the guard variant");
  CheckNotInHook();  // outside a hook: fine
  EXPECT_DEATH(
      {
        HookGuard guard;
        CheckNotInHook();
      },
      "allocator was called from inside a hook");
}

TEST(AllocGuardTest, NestedGuardsReportOnlyTheOutermostAsEntered) {
  EXPECT_FALSE(InHook());
  {
    HookGuard outer;
    EXPECT_TRUE(outer.entered());
    EXPECT_TRUE(InHook());
    HookGuard inner;
    EXPECT_FALSE(inner.entered());
  }
  EXPECT_FALSE(InHook());
}

}  // namespace
}  // namespace cgoheap::agent
