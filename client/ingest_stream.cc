#include "client/ingest_stream.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"

namespace cgoheap::client {
namespace {

// The server said no for a reason resending cannot fix.
bool Permanent(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return true;
    default:
      return false;
  }
}

}  // namespace

IngestStream::IngestStream(std::shared_ptr<grpc::Channel> channel, v1::ProcessHello hello,
                           std::string authorization, size_t max_unacked_bytes)
    : stub_(v1::Ingest::NewStub(channel)),
      hello_(std::move(hello)),
      authorization_(std::move(authorization)),
      max_unacked_bytes_(max_unacked_bytes) {
  thread_ = std::thread([this] { Run(); });
}

IngestStream::~IngestStream() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (active_ != nullptr) active_->TryCancel();
    changed_.SignalAll();
  }
  thread_.join();
}

uint64_t IngestStream::Send(v1::AgentMessage msg) {
  absl::MutexLock lock(&mu_);
  while (unacked_bytes_ > max_unacked_bytes_ && error_.ok() && !stop_) {
    changed_.WaitWithTimeout(&mu_, absl::Milliseconds(100));
  }
  if (!error_.ok()) return 0;
  const uint64_t seq = next_seq_++;
  msg.set_seq(seq);
  unacked_bytes_ += msg.ByteSizeLong();
  unacked_.push_back(std::move(msg));
  changed_.SignalAll();
  return seq;
}

bool IngestStream::Greeted() const {
  absl::MutexLock lock(&mu_);
  return greeted_;
}

std::vector<uint64_t> IngestStream::ResumePositions() const {
  absl::MutexLock lock(&mu_);
  return resume_positions_;
}

absl::Status IngestStream::error() const {
  absl::MutexLock lock(&mu_);
  return error_;
}

uint64_t IngestStream::sent() const {
  absl::MutexLock lock(&mu_);
  return next_seq_ - 1;
}

uint64_t IngestStream::acked() const {
  absl::MutexLock lock(&mu_);
  return acked_;
}

void IngestStream::OnAck(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  if (seq > acked_) acked_ = seq;
  while (!unacked_.empty() && unacked_.front().seq() <= acked_) {
    unacked_bytes_ -= unacked_.front().ByteSizeLong();
    unacked_.pop_front();
  }
  changed_.SignalAll();
}

absl::Status IngestStream::WaitAcked(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (acked_ < next_seq_ - 1 && error_.ok()) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;
  }
  if (!error_.ok()) return error_;
  if (acked_ < next_seq_ - 1) {
    return absl::DeadlineExceededError(absl::StrCat(
        next_seq_ - 1 - acked_, " of ", next_seq_ - 1,
        " messages were not acknowledged by the server in time",
        last_failure_.empty() ? "" : absl::StrCat(" (last error: ", last_failure_, ")")));
  }
  return absl::OkStatus();
}

void IngestStream::Run() {
  absl::Duration backoff = absl::Milliseconds(50);
  while (RunOnce()) {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    changed_.WaitWithTimeout(&mu_, backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

bool IngestStream::RunOnce() {
  grpc::ClientContext ctx;
  if (!authorization_.empty()) ctx.AddMetadata("authorization", authorization_);
  {
    absl::MutexLock lock(&mu_);
    if (stop_ || !error_.ok()) return false;
    active_ = &ctx;
  }
  auto clear_active = [&] {
    absl::MutexLock lock(&mu_);
    active_ = nullptr;
  };
  auto stream = stub_->Stream(&ctx);
  v1::AgentMessage hello;
  *hello.mutable_hello() = hello_;
  v1::IngestAck ack;
  if (!stream->Write(hello) || !stream->Read(&ack)) {
    grpc::Status st = stream->Finish();
    clear_active();
    absl::MutexLock lock(&mu_);
    if (Permanent(st.error_code())) {
      error_ = absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
      changed_.SignalAll();
      return false;
    }
    last_failure_ = st.error_message();
    return true;
  }
  {
    absl::MutexLock lock(&mu_);
    if (!greeted_) {
      greeted_ = true;
      resume_positions_.assign(ack.lane_positions().begin(), ack.lane_positions().end());
      // The process is known up to acked_seq (a forwarder before this one
      // sent it): number everything after it.
      if (unacked_.empty() && next_seq_ == 1 && ack.acked_seq() > 0) {
        next_seq_ = ack.acked_seq() + 1;
        acked_ = ack.acked_seq();
      }
    }
  }
  OnAck(ack.acked_seq());

  bool reader_done = false;
  std::thread reader([&] {
    v1::IngestAck a;
    while (stream->Read(&a)) OnAck(a.acked_seq());
    absl::MutexLock lock(&mu_);
    reader_done = true;
    changed_.SignalAll();
  });
  uint64_t sent = ack.acked_seq();
  bool write_failed = false;
  for (;;) {
    std::vector<v1::AgentMessage> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&] {
        return reader_done || (stop_ && unacked_.empty()) ||
               (!unacked_.empty() && unacked_.back().seq() > sent);
      };
      while (!ready()) changed_.Wait(&mu_);
      if (reader_done || (stop_ && unacked_.empty())) break;
      for (const auto& m : unacked_) {
        if (m.seq() > sent) batch.push_back(m);
      }
    }
    for (const auto& m : batch) {
      if (!stream->Write(m)) {
        write_failed = true;
        break;
      }
      sent = m.seq();
    }
    if (write_failed) break;
  }
  stream->WritesDone();
  reader.join();
  grpc::Status st = stream->Finish();
  clear_active();
  absl::MutexLock lock(&mu_);
  if (!st.ok() && Permanent(st.error_code())) {
    error_ = absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    changed_.SignalAll();
    return false;
  }
  if (!st.ok()) last_failure_ = st.error_message();
  return !(stop_ && unacked_.empty());
}

}  // namespace cgoheap::client
