// cgoheap bench ingest: a load generator for cgoheapd's ingest path.
//
// Each simulated process is one stream, as a forwarder would open it: a
// hello, then numbered batches with up to --window unacknowledged, then an
// end. A batch allocates --batch/2 fresh blocks over --stacks stacks and frees
// the blocks the previous batch allocated, so the server's live tables stay
// bounded however long it runs. Batches are built once and replayed with new
// sequence numbers, so the generator spends its CPU on sending, not building.
//
// The last line printed is the result:
//   ingest: 1,234,567 events/s for 10.0 s from 4 processes, acks p50 3.1 ms p99 9.8 ms max 20.4 ms
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "cgoheap.grpc.pb.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/report.h"
#include "common/flags.h"
#include "proto/stack_id.h"
#include "server/server.h"

namespace cgoheap::client {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kBodies = 16;  // distinct batch bodies replayed in a cycle
constexpr int kFramesPerStack = 12;

struct Options {
  uint64_t processes = 4;
  double seconds = 10;
  uint64_t batch = 8192;
  uint64_t stacks = 200;
  uint64_t window = 8;
  bool fsync = true;  // the local server syncs its WAL, as cgoheapd does by default
};

// Stack n of a simulated process (n = 1..K), under its real id (the digest
// of its frames: the server takes nothing else).
v1::Stack MakeStack(uint64_t n) {
  v1::Stack s;
  s.add_frames()->set_function("malloc");
  for (int i = 1; i < kFramesPerStack; ++i) {
    v1::Frame* f = s.add_frames();
    f->set_function(absl::StrFormat("github.com/acme/svc/pkg%d.Handler%d", i, n));
    f->set_file(absl::StrFormat("/src/acme/svc/pkg%d/handler.go", i));
    f->set_line(static_cast<uint32_t>(10 + i * 7 + n % 50));
    f->set_go(true);
  }
  s.set_id(StackIdOf(s));
  return s;
}

// Body k allocates half a batch of blocks and frees body k-1's.
std::vector<v1::EventBatch> MakeBodies(uint64_t pid_salt, const Options& o) {
  std::vector<v1::EventBatch> bodies(kBodies);
  std::vector<v1::Stack> stacks;
  for (uint64_t n = 1; n <= o.stacks; ++n) stacks.push_back(MakeStack(n));
  const uint64_t half = o.batch / 2;
  auto addr = [&](int body, uint64_t i) {
    return (pid_salt << 40) | (uint64_t(body) << 28) | (i << 4);
  };
  for (int k = 0; k < kBodies; ++k) {
    v1::EventBatch& b = bodies[k];
    int prev = (k + kBodies - 1) % kBodies;
    for (uint64_t i = 0; i < half; ++i) {
      b.add_kinds(v1::EVENT_KIND_ALLOC);
      b.add_addresses(addr(k, i));
      b.add_sizes(16 + (i * 37) % 4000);
      b.add_stack_ids(stacks[(i * 7919 + k) % o.stacks].id());
      b.add_kinds(v1::EVENT_KIND_FREE);
      b.add_addresses(addr(prev, i));
      b.add_sizes(0);
      b.add_stack_ids(0);
    }
  }
  for (v1::Stack& st : stacks) *bodies[0].add_new_stacks() = std::move(st);
  return bodies;
}

struct Result {
  uint64_t events = 0;
  std::vector<double> latencies_ms;
  std::string error;
};

void RunProcess(const std::shared_ptr<grpc::Channel>& channel, const std::string& authorization,
                uint64_t process_id, const Options& o, Clock::time_point start,
                Clock::time_point stop, Result* out) {
  auto stub = v1::Ingest::NewStub(channel);
  std::vector<v1::EventBatch> bodies = MakeBodies(process_id & 0xffff, o);
  grpc::ClientContext ctx;
  if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  auto stream = stub->Stream(&ctx);
  v1::AgentMessage hello;
  hello.mutable_hello()->set_process_id(process_id);
  hello.mutable_hello()->set_service("bench");
  hello.mutable_hello()->set_pid(static_cast<int32_t>(process_id & 0xffff));
  v1::IngestAck ack;
  if (!stream->Write(hello) || !stream->Read(&ack)) {
    out->error = stream->Finish().error_message();
    return;
  }
  std::mutex mu;
  std::condition_variable cv;
  uint64_t acked = 0;
  std::vector<Clock::time_point> sent_at(1);
  std::vector<uint64_t> events_in(1);
  bool reader_done = false;
  std::thread reader([&] {
    v1::IngestAck a;
    while (stream->Read(&a)) {
      auto now = Clock::now();
      std::lock_guard<std::mutex> l(mu);
      for (uint64_t s = acked + 1; s <= a.acked_seq() && s < sent_at.size(); ++s) {
        if (sent_at[s] >= start && now <= stop) {
          out->latencies_ms.push_back(std::chrono::duration<double, std::milli>(now - sent_at[s]).count());
          out->events += events_in[s];
        }
      }
      acked = std::max(acked, a.acked_seq());
      cv.notify_all();
    }
    std::lock_guard<std::mutex> l(mu);
    reader_done = true;
    cv.notify_all();
  });
  v1::AgentMessage msg;
  uint64_t seq = 0;
  while (Clock::now() < stop) {
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return reader_done || seq - acked < o.window; });
      if (reader_done) break;
      sent_at.push_back(Clock::now());
      events_in.push_back(o.batch);
    }
    ++seq;
    const v1::EventBatch& body = bodies[(seq - 1) % kBodies];
    msg.set_seq(seq);
    if (seq == 1) {
      *msg.mutable_batch() = body;
    } else {
      // Stacks are defined once; afterwards the body without them.
      *msg.mutable_batch() = body;
      msg.mutable_batch()->clear_new_stacks();
    }
    if (!stream->Write(msg)) break;
  }
  msg.Clear();
  msg.set_seq(++seq);
  msg.mutable_end()->set_exited(true);
  {
    std::lock_guard<std::mutex> l(mu);
    sent_at.push_back(Clock::now());
    events_in.push_back(0);
  }
  stream->Write(msg);
  stream->WritesDone();
  reader.join();
  grpc::Status st = stream->Finish();
  if (!st.ok()) out->error = st.error_message();
}

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

}  // namespace

namespace {

struct Figures {
  uint64_t events_per_second = 0;
  double p50 = 0, p99 = 0, max = 0;
  std::string error;  // a stream failed
};

// Streams for o.seconds over `conn` (already pointing at a server).
Figures Measure(const Options& o, Connection conn) {
  Figures f;
  grpc::ChannelArguments ch_args;
  ch_args.SetMaxSendMessageSize(-1);
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (uint64_t i = 0; i < o.processes; ++i) {
    // A channel each, as separate forwarders would have.
    ch_args.SetInt("cgoheap.bench.channel", static_cast<int>(i));
    absl::StatusOr<std::shared_ptr<grpc::Channel>> ch = conn.Dial(ch_args);
    if (!ch.ok()) {
      f.error = std::string(ch.status().message());
      return f;
    }
    channels.push_back(*ch);
  }
  if (!Reachable(channels[0])) {
    f.error = Unreachable(conn.server);
    return f;
  }
  auto start = Clock::now() + std::chrono::milliseconds(500);  // connections warm up first
  auto stop = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<Result> results(o.processes);
  std::vector<std::thread> threads;
  uint64_t base = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) << 8;
  for (uint64_t i = 0; i < o.processes; ++i) {
    threads.emplace_back(RunProcess, channels[i], conn.authorization(), base + i + 1, std::cref(o),
                         start, stop, &results[i]);
  }
  for (auto& t : threads) t.join();
  uint64_t events = 0;
  std::vector<double> lat;
  for (const Result& r : results) {
    if (!r.error.empty()) {
      f.error = "a stream failed: " + r.error;
      return f;
    }
    events += r.events;
    lat.insert(lat.end(), r.latencies_ms.begin(), r.latencies_ms.end());
  }
  f.events_per_second = static_cast<uint64_t>(events / o.seconds);
  f.p50 = Percentile(lat, 0.50);
  f.p99 = Percentile(lat, 0.99);
  f.max = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
  return f;
}

// A temporary local cgoheapd; with `secure`, TLS (a self-signed certificate
// for 127.0.0.1 made with openssl) and ingest tokens, and conn set up to
// match. Files go in dir.
absl::StatusOr<std::unique_ptr<server::Server>> LocalServer(const Options& o, const std::string& dir,
                                                            bool secure, Connection* conn) {
  std::filesystem::create_directories(dir);
  server::ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.data_dir = dir + "/data";
  so.sync = o.fsync;
  if (secure) {
    std::string cmd = absl::StrCat(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "
        "/CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout '",
        dir, "/key.pem' -out '", dir, "/cert.pem' >/dev/null 2>&1 && openssl rand -hex 32 > '",
        dir, "/token'");
    if (std::system(cmd.c_str()) != 0) {
      return absl::UnavailableError(
          "openssl could not make a certificate for the TLS run (install openssl)");
    }
    so.auth.tls_cert_file = dir + "/cert.pem";
    so.auth.tls_key_file = dir + "/key.pem";
    so.auth.ingest_token_file = dir + "/token";
    conn->tls_ca_file = dir + "/cert.pem";
    conn->token_file = dir + "/token";
  }
  auto s = server::Server::Start(so);
  if (s.ok()) conn->server = (*s)->address();
  return s;
}

}  // namespace

int BenchCommand(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "pprof") {
    return BenchPprofCommand(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  if (!args.empty() && args[0] == "symbols") {
    return BenchSymbolsCommand(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  if (args.empty() || args[0] != "ingest") {
    std::cerr << "cgoheap bench: usage: cgoheap bench ingest [--server=ADDR] [--processes=N] "
                 "[--seconds=S] [--batch=EVENTS] [--stacks=K] [--window=W] [--fsync=false] "
                 "[--compare-tls]\n"
                 "               cgoheap bench pprof [--server=ADDR] [--blocks=N] [--stacks=K] "
                 "[--output=FILE]\n"
                 "               cgoheap bench symbols [--addresses=N] [FILE...]\n";
    return 2;
  }
  Options o;
  Connection conn;
  bool compare_tls = false;
  FlagSet flags("cgoheap bench ingest");
  ConnectionFlags(flags, &conn, /*local_default=*/true);
  flags.Uint("processes", &o.processes, "N", "simulated processes, one stream each (default 4)", 1, 1024);
  flags.Duration("seconds", &o.seconds, "how long to send (default 10s)", 0.1, 3600);
  flags.Uint("batch", &o.batch, "EVENTS", "events per batch (default 8192)", 2, 500000);
  flags.Uint("stacks", &o.stacks, "K", "distinct stacks per process (default 200)", 1, 1000000);
  flags.Uint("window", &o.window, "W", "unacknowledged batches per stream (default 8)", 1, 1024);
  flags.Bool("fsync", &o.fsync,
             "the local server syncs its WAL before acknowledging, as cgoheapd does (default true)");
  flags.Bool("compare-tls", &compare_tls,
             "run twice on local servers, plaintext then TLS with an ingest token, and print both");
  auto rest = flags.Parse(std::vector<std::string>(args.begin() + 1, args.end()));
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap bench ingest");
  if (compare_tls && !conn.server.empty()) {
    std::cerr << "cgoheap bench ingest: --compare-tls starts its own local servers: leave out --server\n";
    return 2;
  }
  std::vector<bool> runs = compare_tls ? std::vector<bool>{false, true} : std::vector<bool>{false};
  for (bool secure : runs) {
    std::unique_ptr<server::Server> local;
    std::string temp;
    Connection c = conn;
    if (conn.server.empty()) {
      temp = (std::filesystem::temp_directory_path() /
              absl::StrFormat("cgoheap-bench-%d", getpid())).string();
      auto s = LocalServer(o, temp, secure, &c);
      if (!s.ok()) {
        std::cerr << "cgoheap bench ingest: " << s.status().message() << "\n";
        if (!temp.empty()) std::filesystem::remove_all(temp);
        return 1;
      }
      local = std::move(*s);
    }
    Figures f = Measure(o, c);
    local.reset();
    if (!temp.empty()) std::filesystem::remove_all(temp);
    if (!f.error.empty()) {
      std::cerr << "cgoheap bench ingest: " << f.error << "\n";
      return 1;
    }
    std::cout << absl::StrFormat(
        "ingest%s: %s events/s for %.1f s from %d processes, acks p50 %.1f ms p99 %.1f ms max "
        "%.1f ms\n",
        compare_tls ? (secure ? " (TLS, token)" : " (plaintext)") : "",
        Thousands(f.events_per_second), o.seconds, o.processes, f.p50, f.p99, f.max);
  }
  return 0;
}

}  // namespace cgoheap::client
