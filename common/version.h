// Which build this is, for --version and the cgoheap_build_info metric: the
// project's version, the git commit it was built from, and the versions of
// the libraries a program reports with them.
//
//   std::cout << VersionText("cgoheap", {{"gRPC", grpc::Version()}});
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cgoheap {

const char* ProjectVersion();
const char* GitCommit();

using LibraryVersions = std::vector<std::pair<std::string, std::string>>;

// "cgoheap 0.1.0 (commit 3a6c278abcde)\nlibraries: gRPC 1.51.1, ...\n"
std::string VersionText(std::string_view program, const LibraryVersions& libraries);

}  // namespace cgoheap
