#include "server/leak/growth.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

namespace cgoheap::server {

GrowthVerdict JudgeGrowth(const std::vector<GrowthSample>& pts, int64_t now, int64_t window) {
  GrowthVerdict v;
  if (pts.empty() || pts.front().t > now - window + GrowthResolution(window)) return v;
  double floor[4], peak0 = 0;
  std::fill(std::begin(floor), std::end(floor), std::numeric_limits<double>::infinity());
  for (const GrowthSample& q : pts) {
    int64_t age = q.t - (now - window);
    int b = age < 0 ? 0 : static_cast<int>(std::min<int64_t>(3, age * 4 / window));
    floor[b] = std::min(floor[b], q.bytes);
    if (b == 0) peak0 = std::max(peak0, q.bytes);
  }
  double rise = floor[3] - floor[0];
  v.grows = std::isfinite(floor[1]) && std::isfinite(floor[2]) && floor[0] < floor[1] &&
            floor[1] < floor[2] && floor[2] < floor[3] && rise > 0.5 * (peak0 - floor[0]);
  v.rate_per_hour = rise / (0.75 * static_cast<double>(window) / 1e9) * 3600;
  v.since = std::max(now - window, pts.front().t);
  return v;
}

}  // namespace cgoheap::server
