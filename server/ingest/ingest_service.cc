#include "server/ingest/ingest_service.h"

#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace cgoheap::server {

namespace {

// protobuf says why a parse failed only in its log ("String field
// 'cgoheap.v1.ProcessHello.args' contains invalid UTF-8 data ..."). While a
// stream parses, what it logs on that thread is kept for the error the
// client gets; everything else goes to stderr as before.
thread_local std::string* t_parse_log = nullptr;

void KeepParseLog(google::protobuf::LogLevel level, const char* filename, int line,
                  const std::string& message) {
  if (t_parse_log != nullptr) {
    if (!t_parse_log->empty()) t_parse_log->append("; ");
    t_parse_log->append(message);
    return;
  }
  static const char* const kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::cerr << "[libprotobuf " << kLevels[std::clamp<int>(level, 0, 3)] << " " << filename << ":"
            << line << "] " << message << "\n";
}

// Reads one message at a time, applies it (RocksDB write included), and
// acknowledges cumulatively: only the newest ack needs to reach the client,
// so at most one write is in flight and later acks overwrite pending ones.
class StreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamReactor(HeapState* state, ServerMetrics* metrics) : state_(state), metrics_(metrics) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side: finish once the last ack is out
      MaybeFinish(grpc::Status::OK);
      return;
    }
    auto start = std::chrono::steady_clock::now();
    ++received_;
    absl::Status parsed = Parse();
    if (!parsed.ok()) {
      if (metrics_ != nullptr) metrics_->OnIngestError();
      MaybeFinish(ToGrpc(parsed));
      return;
    }
    const bool hello = message_.has_hello();
    if (hello) process_id_ = message_.hello().process_id();
    absl::StatusOr<uint64_t> acked = state_->Apply(process_id_, message_);
    if (!acked.ok()) {
      if (metrics_ != nullptr) metrics_->OnIngestError();
      MaybeFinish(ToGrpc(acked.status()));
      return;
    }
    if (metrics_ != nullptr) {
      metrics_->ObserveAck(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    bool write_now = false;
    {
      absl::MutexLock lock(&mu_);
      pending_ack_ = *acked;
      // The answer to a hello says where to resume reading the ring.
      if (hello) pending_positions_ = state_->LanePositions(process_id_);
      have_pending_ = true;
      if (!writing_) {
        writing_ = true;
        have_pending_ = false;
        SetAck(pending_ack_);
        write_now = true;
      }
    }
    if (write_now) StartWrite(&ack_);
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool write_now = false, finish = false;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (ok && have_pending_) {
        writing_ = true;
        have_pending_ = false;
        SetAck(pending_ack_);
        write_now = true;
      } else if (finish_wanted_ && !finished_) {
        finished_ = true;
        finish = true;
        status = finish_status_;
      } else if (!ok && !finished_) {
        finished_ = true;
        finish = true;
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed: client went away");
      }
    }
    if (write_now) StartWrite(&ack_);
    if (finish) Finish(status);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Parse() {
    static std::once_flag install;
    std::call_once(install, [] { google::protobuf::SetLogHandler(KeepParseLog); });
    message_.Clear();
    std::string why;
    t_parse_log = &why;
    grpc::ProtoBufferReader reader(&request_);
    bool ok = message_.ParseFromZeroCopyStream(&reader);
    t_parse_log = nullptr;
    request_.Clear();
    if (ok) return absl::OkStatus();
    if (why.empty()) why = "not a valid encoding";
    return absl::InvalidArgumentError(absl::StrCat(
        "message ", received_, " of this stream is not a cgoheap.v1.AgentMessage this server can "
        "parse, and nothing from it was stored (", why, "). Every string field must be UTF-8: "
        "the cgoheap forwarder writes other bytes as \\xHH; a client that sends them raw must "
        "be fixed or upgraded"));
  }
  void SetAck(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::IngestAck ack;
    ack.set_acked_seq(seq);
    for (uint64_t pos : pending_positions_) ack.add_lane_positions(pos);
    pending_positions_.clear();
    bool own = false;
    grpc::SerializationTraits<v1::IngestAck>::Serialize(ack, &ack_, &own);
  }

  // Finishes now, or after the ack in flight (and any newer one) is written.
  void MaybeFinish(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || finish_wanted_) return;
      finish_wanted_ = true;
      finish_status_ = status;
      if (writing_) return;  // OnWriteDone finishes
      finished_ = true;
    }
    Finish(status);
  }

  HeapState* const state_;
  ServerMetrics* const metrics_;
  grpc::ByteBuffer request_;
  v1::AgentMessage message_;
  uint64_t received_ = 0;  // messages read on this stream
  uint64_t process_id_ = 0;

  absl::Mutex mu_;
  grpc::ByteBuffer ack_;  // owned by the write in flight
  uint64_t pending_ack_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> pending_positions_ ABSL_GUARDED_BY(mu_);
  bool have_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// A stream refused before it started (its credentials).
class RefusedStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const grpc::Status& st) { Finish(st); }
  void OnDone() override { delete this; }
};

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* IngestService::Stream(
    grpc::CallbackServerContext* context) {
  if (auth_ != nullptr) {
    if (grpc::Status allowed = auth_->Check(Role::kIngest, context->client_metadata());
        !allowed.ok()) {
      return new RefusedStream(allowed);
    }
  }
  return new StreamReactor(state_, metrics_);
}

}  // namespace cgoheap::server
