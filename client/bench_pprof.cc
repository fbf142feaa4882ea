// cgoheap bench pprof: how long a profile of a large live heap takes.
//
// One simulated process streams --blocks live blocks over --stacks stacks
// (each a C allocator, C frames with an inlined call, the cgo crossing and Go
// frames, as real stacks are) into a cgoheapd (a local one unless --server),
// and stays running; then its live heap is asked for as a pprof profile,
// timed from the request to the last byte received, and written to --output
// for `go tool pprof` (bench/run.sh times that too).
//
// The last line printed is the result:
//   pprof: live heap of 100,000 blocks over 10,000 stacks: 1.1 MB profile in 92 ms (built and received)
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

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

// Stack n: malloc, a C function with a helper inlined into it, the cgo
// crossing, then Go frames up to main.
v1::Stack ProfileStack(uint64_t n) {
  v1::Stack s;
  s.add_frames()->set_function("malloc");
  auto add = [&](std::string fn, std::string file, uint32_t line, uint64_t pc, bool go,
                 bool inlined, const char* object) {
    v1::Frame* f = s.add_frames();
    f->set_function(std::move(fn));
    f->set_file(std::move(file));
    f->set_line(line);
    f->set_pc(pc);
    f->set_go(go);
    f->set_inlined(inlined);
    f->set_object(object);
    f->set_build_id(go ? "6f0c3d1e2a9b8c7d" : "a1b2c3d4e5f60718");
  };
  const uint64_t base = 0x400000 + n * 0x40;
  add(absl::StrFormat("buf_alloc_%d", n % 97), "/src/acme/native/buf.h", 20 + n % 40, base + 1,
      false, true, "/usr/lib/libacme.so");
  add(absl::StrFormat("codec_encode_%d", n), "/src/acme/native/codec.c", 100 + n % 300, base + 1,
      false, false, "/usr/lib/libacme.so");
  add("runtime.asmcgocall", "/usr/local/go/src/runtime/asm_amd64.s", 918, 0x46a2c4, true, false,
      "/srv/app");
  add("runtime.cgocall", "/usr/local/go/src/runtime/cgocall.go", 167, 0x40a735, true, false, "/srv/app");
  for (int i = 0; i < 6; ++i) {
    add(absl::StrFormat("github.com/acme/svc/pkg%d.Handle%d", i, n % (50 + i)),
        absl::StrFormat("/src/acme/svc/pkg%d/handle.go", i), 10 + i * 7 + n % 50,
        0x500000 + n * 0x100 + i, true, false, "/srv/app");
  }
  s.set_id(StackIdOf(s));
  return s;
}

}  // namespace

int BenchPprofCommand(const std::vector<std::string>& args) {
  Connection conn;
  uint64_t blocks = 100'000, stacks = 10'000;
  std::string output;
  FlagSet flags("cgoheap bench pprof");
  ConnectionFlags(flags, &conn, /*local_default=*/true);
  flags.Uint("blocks", &blocks, "N", "live blocks of the simulated process (default 100000)", 1,
             5'000'000);
  flags.Uint("stacks", &stacks, "K", "distinct stacks they were allocated from (default 10000)", 1,
             200'000);
  flags.String("output", &output, "FILE", "write the profile here (default: not kept)");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return FlagError(rest.status(), "cgoheap bench pprof");
  std::unique_ptr<server::Server> local;
  std::string temp;
  if (conn.server.empty()) {
    temp = (std::filesystem::temp_directory_path() /
            absl::StrFormat("cgoheap-bench-pprof-%d", getpid())).string();
    server::ServerOptions so;
    so.listen = "127.0.0.1:0";
    so.data_dir = temp;
    so.sync = false;
    auto s = server::Server::Start(so);
    if (!s.ok()) {
      std::cerr << "cgoheap bench pprof: " << s.status().message() << "\n";
      return 1;
    }
    local = std::move(*s);
    conn.server = local->address();
  }
  auto cleanup = [&] {
    local.reset();
    if (!temp.empty()) std::filesystem::remove_all(temp);
  };
  grpc::ChannelArguments ch_args;
  ch_args.SetMaxReceiveMessageSize(256 << 20);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = conn.Dial(ch_args);
  if (!channel.ok()) {
    std::cerr << "cgoheap bench pprof: " << channel.status().message() << "\n";
    cleanup();
    return 2;
  }
  // The process: a hello, then batches of 10,000 allocations; no end (its
  // heap stays live).
  const uint64_t process_id = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1;
  grpc::ClientContext ctx;
  conn.Authorize(&ctx);
  auto stream = v1::Ingest::NewStub(*channel)->Stream(&ctx);
  v1::AgentMessage msg;
  msg.mutable_hello()->set_process_id(process_id);
  msg.mutable_hello()->set_service("bench-pprof");
  v1::IngestAck ack;
  bool ok = stream->Write(msg) && stream->Read(&ack);
  std::vector<uint64_t> ids;
  uint64_t seq = 0;
  for (uint64_t sent = 0; ok && sent < blocks;) {
    v1::AgentMessage m;
    m.set_seq(++seq);
    v1::EventBatch* b = m.mutable_batch();
    for (uint64_t i = 0; i < 10'000 && sent < blocks; ++i, ++sent) {
      const uint64_t n = sent % stacks;
      if (n == ids.size()) {
        v1::Stack st = ProfileStack(n);
        ids.push_back(st.id());
        *b->add_new_stacks() = std::move(st);
      }
      b->add_kinds(v1::EVENT_KIND_ALLOC);
      b->add_addresses(0x7f0000000000 + sent * 64);
      b->add_sizes(32 + (sent * 37) % 4000);
      b->add_stack_ids(ids[n]);
    }
    ok = stream->Write(m) && stream->Read(&ack) && ack.acked_seq() == seq;
  }
  if (!ok) {
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    std::cerr << "cgoheap bench pprof: the stream failed: " << RpcError(st, conn.server) << "\n";
    cleanup();
    return 1;
  }
  v1::ProfileRequest req;
  req.set_process_id(absl::StrFormat("%016x", process_id));
  v1::ProfileResponse resp;
  grpc::ClientContext pctx;
  conn.Authorize(&pctx);
  auto start = std::chrono::steady_clock::now();
  grpc::Status st = v1::Query::NewStub(*channel)->Profile(&pctx, req, &resp);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  stream->WritesDone();
  stream->Finish();
  cleanup();
  if (!st.ok()) {
    std::cerr << "cgoheap bench pprof: " << RpcError(st, conn.server) << "\n";
    return 1;
  }
  if (!output.empty()) {
    std::ofstream out(output, std::ios::binary | std::ios::trunc);
    out.write(resp.profile().data(), static_cast<std::streamsize>(resp.profile().size()));
    if (!out.flush()) {
      std::cerr << "cgoheap bench pprof: cannot write " << output << "\n";
      return 1;
    }
  }
  std::cout << absl::StrFormat(
      "pprof: live heap of %s blocks over %s stacks: %.1f MB profile in %.0f ms (built and "
      "received)%s\n",
      Thousands(blocks), Thousands(resp.samples()), resp.profile().size() / 1e6, ms,
      output.empty() ? "" : ", written to " + output);
  return 0;
}

}  // namespace cgoheap::client
