// The gRPC status a client sees for a status from cgoheapd's state or store
// (absl and gRPC share their codes).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace cgoheap::server {

inline grpc::Status ToGrpc(const absl::Status& st) {
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

}  // namespace cgoheap::server
