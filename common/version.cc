#include "common/version.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "generated/cgoheap_build.h"

namespace cgoheap {

const char* ProjectVersion() { return CGOHEAP_VERSION; }
const char* GitCommit() { return CGOHEAP_GIT_COMMIT; }

std::string VersionText(std::string_view program, const LibraryVersions& libraries) {
  std::vector<std::string> libs;
  for (const auto& [name, version] : libraries) libs.push_back(absl::StrCat(name, " ", version));
  return absl::StrCat(std::string(program), " ", ProjectVersion(), " (commit ", GitCommit(), ")\n",
                      "libraries: ", absl::StrJoin(libs, ", "), "\n");
}

}  // namespace cgoheap
