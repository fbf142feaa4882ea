// The forwarder's half of the ingest protocol for one process: numbers each
// message, keeps it until the server acknowledges it durable, and after any
// connection failure reconnects, says hello again and resends everything the
// server has not acknowledged (the server drops duplicates).
//
//   IngestStream s(channel, hello);
//   s.Send(std::move(batch_msg));
//   ...
//   absl::Status st = s.WaitAcked(absl::Seconds(30));
#pragma once

#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cgoheap.grpc.pb.h"

namespace cgoheap::client {

// Thread-safe.
class IngestStream {
 public:
  // authorization: the "authorization" metadata of the stream ("" for none).
  IngestStream(std::shared_ptr<grpc::Channel> channel, v1::ProcessHello hello,
               std::string authorization = "", size_t max_unacked_bytes = 256 << 20);
  ~IngestStream();

  // Numbers msg (its seq is set here) and queues it. Blocks while more than
  // max_unacked_bytes are waiting for acknowledgement, so a server that cannot
  // keep up slows the forwarder (and, through the ring, never the target
  // beyond the agent's bounded wait). Once the server has refused the stream
  // (error()), nothing more is queued: msg is dropped and false returned.
  // Returns the seq given to msg, 0 if it was dropped.
  uint64_t Send(v1::AgentMessage msg);
  // Whether the server has answered the first hello, and where it said a
  // resumed process's ring is to be read from (IngestAck.lane_positions).
  // A stream that sent nothing before that answer numbers its messages after
  // the server's last durable seq: a forwarder restarted after a crash goes
  // on where the one before it stopped.
  bool Greeted() const;
  std::vector<uint64_t> ResumePositions() const;
  // Not OK once the server refused the stream for a reason resending cannot
  // fix (a malformed message, a refused credential): the stream is over.
  absl::Status error() const;
  // Waits until every message sent so far is acknowledged.
  absl::Status WaitAcked(absl::Duration timeout);
  uint64_t sent() const;
  uint64_t acked() const;

 private:
  void Run();
  bool RunOnce();  // one connection; false when it is time to stop
  void OnAck(uint64_t seq);

  std::unique_ptr<v1::Ingest::Stub> stub_;
  const v1::ProcessHello hello_;
  const std::string authorization_;
  const size_t max_unacked_bytes_;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  std::deque<v1::AgentMessage> unacked_ ABSL_GUARDED_BY(mu_);
  size_t unacked_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool greeted_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint64_t> resume_positions_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);        // permanent: the server refused
  std::string last_failure_ ABSL_GUARDED_BY(mu_);  // transient: why not connected
  grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

}  // namespace cgoheap::client
