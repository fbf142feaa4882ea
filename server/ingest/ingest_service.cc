#include "server/ingest/ingest_service.h"

#include <chrono>

#include "absl/synchronization/mutex.h"

namespace cgoheap::server {

grpc::Status ToGrpc(const absl::Status& st) {
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

namespace {

// Reads one message at a time, applies it (RocksDB write included), and
// acknowledges cumulatively: only the newest ack needs to reach the client,
// so at most one write is in flight and later acks overwrite pending ones.
class StreamReactor final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::IngestAck> {
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
    if (request_.has_hello()) process_id_ = request_.hello().process_id();
    absl::StatusOr<uint64_t> acked = state_->Apply(process_id_, request_);
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
      have_pending_ = true;
      if (!writing_) {
        writing_ = true;
        have_pending_ = false;
        ack_.set_acked_seq(pending_ack_);
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
        ack_.set_acked_seq(pending_ack_);
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
  v1::AgentMessage request_;
  uint64_t process_id_ = 0;

  absl::Mutex mu_;
  v1::IngestAck ack_;  // owned by the write in flight
  uint64_t pending_ack_ ABSL_GUARDED_BY(mu_) = 0;
  bool have_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerBidiReactor<v1::AgentMessage, v1::IngestAck>* IngestService::Stream(
    grpc::CallbackServerContext* /*context*/) {
  return new StreamReactor(state_, metrics_);
}

}  // namespace cgoheap::server
