// gRPC calls made the way a generic tool makes them (raw bytes, no generated
// client code: none ships with Debian's gRPC for the standard services), with
// optional call metadata ("authorization" for a token).
//
//   grpc::GenericStub generic(channel);
//   std::string bytes;
//   grpc::Status st = RawUnary(&generic, "/grpc.health.v1.Health/Check", "", &bytes);
//   RawBidiCall call(&generic, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
//                    std::string("\x3a\x00", 2), {{"authorization", "Bearer ..."}});
//   st = call.Await(&bytes);
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace cgoheap::testing {

using Metadata = std::map<std::string, std::string>;

inline std::string BufferBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (buffer.Dump(&slices).ok()) {
    for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

// One raw request/response exchange over a bidi streaming method.
class RawBidiCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RawBidiCall(grpc::GenericStub* stub, const std::string& method, const std::string& request,
              const Metadata& metadata = {}) {
    grpc::Slice slice(request);
    request_ = grpc::ByteBuffer(&slice, 1);
    for (const auto& [k, v] : metadata) ctx_.AddMetadata(k, v);
    stub->PrepareBidiStreamingCall(&ctx_, method, grpc::StubOptions(), this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  void OnWriteDone(bool) override { StartWritesDone(); }
  void OnReadDone(bool ok) override {
    if (ok) bytes_ += BufferBytes(response_);
  }
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> l(mu_);
    status_ = s;
    done_ = true;
    cv_.notify_all();
  }
  grpc::Status Await(std::string* bytes) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(10), [&] { return done_; });
    *bytes = bytes_;
    return done_ ? status_ : grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no answer");
  }

 private:
  grpc::ClientContext ctx_;
  grpc::ByteBuffer request_, response_;
  std::string bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
};

// One unary call with a raw request; waits up to 10 s.
inline grpc::Status RawUnary(grpc::GenericStub* stub, const std::string& method,
                             const std::string& request, std::string* response_bytes,
                             const Metadata& metadata = {}) {
  grpc::ClientContext ctx;
  for (const auto& [k, v] : metadata) ctx.AddMetadata(k, v);
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1), resp;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status st;
  stub->UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
    std::lock_guard<std::mutex> l(mu);
    st = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> l(mu);
  if (!cv.wait_for(l, std::chrono::seconds(10), [&] { return done; })) {
    ctx.TryCancel();
    cv.wait(l, [&] { return done; });
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no answer in 10 s");
  }
  *response_bytes = BufferBytes(resp);
  return st;
}

}  // namespace cgoheap::testing
