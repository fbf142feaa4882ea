// cgoheapd as a network service: TLS (certificates made here with openssl),
// mutual TLS, bearer tokens in two roles, what a caller without them is told,
// the metric that counts refusals, and the refusal to serve a public address
// unguarded.
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "cgoheap.grpc.pb.h"
#include "tests/testing/raw_calls.h"
#include "tests/testing/test_util.h"

namespace cgoheap::testing {
namespace {

constexpr char kIngestToken[] = "ingest-0123456789abcdef0123456789abcdef";
constexpr char kQueryToken[] = "query-0123456789abcdef0123456789abcdef";

Metadata Bearer(const std::string& token) { return {{"authorization", "Bearer " + token}}; }

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    std::ofstream(dir_ + "/ingest.token") << "# forwarders\n" << kIngestToken << "\n";
    std::ofstream(dir_ + "/query.token") << kQueryToken << "\n";
    // A CA, a server certificate for 127.0.0.1 and a client certificate,
    // both signed by it.
    std::string script = absl::StrCat(
        "set -e; cd '", dir_, "'; ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes';",
        "openssl req -x509 $ec -days 2 -subj /CN=cgoheap-test-ca -keyout ca.key -out ca.pem;",
        "openssl req $ec -subj /CN=localhost -keyout server.key -out server.csr;",
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext;",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile server.ext -out server.pem;",
        "openssl req $ec -subj /CN=forwarder -keyout client.key -out client.csr;",
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext;",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile client.ext -out client.pem;",
        // A second CA that signed nothing here: a server it does not vouch for.
        "openssl req -x509 $ec -days 2 -subj /CN=other-ca -keyout other.key -out other.pem");
    RunResult r = RunProcess({"bash", "-c", script});
    ASSERT_EQ(r.exit_code, 0) << "openssl (Debian's openssl package; ./dev.sh installs it): "
                              << r.err;
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> Tokens() const {
    return {"--ingest-token-file=" + Path("ingest.token"),
            "--query-token-file=" + Path("query.token")};
  }
  std::vector<std::string> Tls() const {
    return {"--tls-cert=" + Path("server.pem"), "--tls-key=" + Path("server.key")};
  }

  TempDir tmp_;
  std::string dir_;
};

// Streams one hello (and an end) for process `id` and returns how it went.
grpc::Status StreamHello(const std::shared_ptr<grpc::Channel>& channel, const Metadata& md,
                         uint64_t id) {
  auto stub = v1::Ingest::NewStub(channel);
  grpc::ClientContext ctx;
  for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->Stream(&ctx);
  v1::AgentMessage hello;
  hello.mutable_hello()->set_process_id(id);
  hello.mutable_hello()->set_service("auth");
  v1::IngestAck ack;
  if (stream->Write(hello) && stream->Read(&ack)) {
    v1::AgentMessage end;
    end.set_seq(1);
    end.mutable_end()->set_exited(true);
    stream->Write(end);
    stream->Read(&ack);
  }
  stream->WritesDone();
  return stream->Finish();
}

grpc::Status List(const std::shared_ptr<grpc::Channel>& channel, const Metadata& md) {
  grpc::ClientContext ctx;
  for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListProcessesResponse resp;
  return v1::Query::NewStub(channel)->ListProcesses(&ctx, v1::ListProcessesRequest(), &resp);
}

double Counter(const std::string& metrics, const std::string& series) {
  size_t at = metrics.find(series + " ");
  return at == std::string::npos ? -1 : std::stod(metrics.substr(at + series.size() + 1));
}

// Health answers anyone; server reflection wants a query token (an ingest
// token is the wrong role).
void ExpectHealthOpenAndReflectionForQueryTokens(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub generic(channel);
  std::string bytes;
  grpc::Status st = RawUnary(&generic, "/grpc.health.v1.Health/Check", "", &bytes);
  EXPECT_TRUE(st.ok()) << st.error_message();
  const std::string list_services("\x3a\x00", 2);
  const std::string reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
  const std::pair<Metadata, grpc::StatusCode> cases[] = {
      {{}, grpc::StatusCode::UNAUTHENTICATED},
      {Bearer(kIngestToken), grpc::StatusCode::PERMISSION_DENIED},
      {Bearer(kQueryToken), grpc::StatusCode::OK}};
  for (const auto& [metadata, expected] : cases) {
    RawBidiCall call(&generic, reflection, list_services, metadata);
    st = call.Await(&bytes);
    EXPECT_EQ(st.error_code(), expected) << st.error_message();
  }
  EXPECT_NE(bytes.find("cgoheap.v1.Query"), std::string::npos);
}

TEST_F(AuthTest, EachRoleMayDoOnlyItsOwnAndCallersAreToldWhatToDo) {
  TempDir data;
  std::vector<std::string> flags = Tokens();
  flags.push_back("--metrics=127.0.0.1:0");
  Cgoheapd d(data.path(), flags);
  auto channel = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());

  grpc::Status st = List(channel, {});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("--token-file"), std::string::npos) << st.error_message();
  st = List(channel, Bearer(kIngestToken));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = List(channel, Bearer("not-a-token-this-server-knows"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(List(channel, Bearer(kQueryToken)).ok());

  st = StreamHello(channel, {}, 1);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  st = StreamHello(channel, Bearer(kQueryToken), 2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = StreamHello(channel, Bearer(kIngestToken), 3);
  EXPECT_TRUE(st.ok()) << st.error_message();

  // Health stays open; reflection follows the query role.
  ExpectHealthOpenAndReflectionForQueryTokens(channel);

  // The CLI: refused without a token, with the server's reason; fine with one.
  RunResult ps = Cli({"ps", "--server=" + d.address()});
  EXPECT_EQ(ps.exit_code, 1);
  EXPECT_NE(ps.err.find("needs a token of the query role"), std::string::npos) << ps.err;
  ps = Cli({"ps", "--server=" + d.address(), "--token-file=" + Path("query.token")});
  EXPECT_EQ(ps.exit_code, 0) << ps.err;
  EXPECT_NE(ps.out.find("auth"), std::string::npos) << ps.out;
  ps = RunProcess({BinDir() + "/cgoheap", "ps", "--server=" + d.address()},
                  {"CGOHEAP_TOKEN_FILE=" + Path("query.token")});
  EXPECT_EQ(ps.exit_code, 0) << ps.err;

  // /metrics is read like the query API: basic auth, a query token as the password.
  RunResult metrics = RunProcess({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                  "-u", std::string("x:") + kIngestToken,
                                  "http://" + d.metrics_address() + "/metrics"});
  EXPECT_EQ(metrics.out, "403") << "an ingest token is the wrong role";
  metrics = RunProcess({"curl", "-sf", "-u", std::string("prometheus:") + kQueryToken,
                        "http://" + d.metrics_address() + "/metrics"});
  ASSERT_EQ(metrics.exit_code, 0);
  // ListProcesses, reflection and the CLI without a token; ListProcesses and
  // reflection with the ingest token.
  EXPECT_EQ(Counter(metrics.out, "cgoheap_auth_failures_total{reason=\"missing\",role=\"query\"}"), 3);
  // ... and the ingest token offered to /metrics.
  EXPECT_EQ(Counter(metrics.out, "cgoheap_auth_failures_total{reason=\"wrong_role\",role=\"query\"}"), 3);
  // The bad token.
  EXPECT_EQ(Counter(metrics.out, "cgoheap_auth_failures_total{reason=\"unknown\",role=\"query\"}"), 1);
  EXPECT_EQ(Counter(metrics.out, "cgoheap_auth_failures_total{reason=\"missing\",role=\"ingest\"}"), 1);
  EXPECT_EQ(Counter(metrics.out, "cgoheap_auth_failures_total{reason=\"wrong_role\",role=\"ingest\"}"), 1);

  // The pprof endpoints too: refused without a token (asking for basic
  // auth, with what to send), served with a query token as the basic-auth
  // password (what go tool pprof sends for http://USER:TOKEN@HOST/) or as a
  // bearer token.
  const std::string heap = "http://" + d.metrics_address() + "/debug/pprof/heap";
  RunResult refused = RunProcess({"curl", "-s", "-i", heap});
  EXPECT_NE(refused.out.find("401 Unauthorized"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find("WWW-Authenticate: Basic realm=\"cgoheapd\""), std::string::npos)
      << refused.out;
  EXPECT_NE(refused.out.find("basic-auth password"), std::string::npos) << refused.out;
  for (const std::vector<std::string>& how :
       {std::vector<std::string>{"-u", std::string("cgoheap:") + kQueryToken},
        std::vector<std::string>{"-H", std::string("Authorization: Bearer ") + kQueryToken}}) {
    std::vector<std::string> argv = {"curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}"};
    argv.insert(argv.end(), how.begin(), how.end());
    argv.push_back(heap + "?service=auth");
    EXPECT_EQ(RunProcess(argv).out, "200") << how[1];
  }
}

TEST_F(AuthTest, TlsWithTokensCarriesARunAndItsReport) {
  TempDir data;
  std::vector<std::string> flags = Tokens();
  for (const std::string& f : Tls()) flags.push_back(f);
  flags.push_back("--metrics=127.0.0.1:0");
  Cgoheapd d(data.path(), flags);
  const std::string server = "--server=" + d.address();

  // A program recorded over TLS with an ingest token, its leak read back
  // with a query token.
  RunResult run = Cli({"run", server, "--tls-ca=" + Path("ca.pem"),
                       "--token-file=" + Path("ingest.token"), "--",
                       Program("seed_cmalloc")});
  ASSERT_NE(run.err.find("recorded on"), std::string::npos) << run.err;
  RunResult leaks = Cli({"leaks", server, "--tls-ca=" + Path("ca.pem"),
                         "--token-file=" + Path("query.token"), "--json"});
  ASSERT_EQ(leaks.exit_code, 0) << leaks.err;
  EXPECT_NE(leaks.out.find("\"bytes\""), std::string::npos) << leaks.out;
  EXPECT_NE(leaks.out.find("main.go"), std::string::npos) << leaks.out;

  // Plaintext to a TLS port, or a CA that did not sign the server: no answer,
  // and a message that names the TLS flags.
  leaks = Cli({"leaks", server, "--token-file=" + Path("query.token")});
  EXPECT_NE(leaks.exit_code, 0);
  EXPECT_NE(leaks.err.find("--tls-ca"), std::string::npos) << leaks.err;
  leaks = Cli({"leaks", server, "--tls-ca=" + Path("other.pem"), "--token-file=" + Path("query.token")});
  EXPECT_NE(leaks.exit_code, 0);

  // Over TLS, reflection needs a query token too; health needs nothing.
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(Path("ca.pem"));
  auto channel = grpc::CreateChannel(d.address(), grpc::SslCredentials(ssl));
  ExpectHealthOpenAndReflectionForQueryTokens(channel);

  // The HTTP port is HTTPS with the same certificate: Prometheus' scrape and
  // go tool pprof both verify it, and plain HTTP gets nothing. (go tool
  // pprof's own fetcher ignores -tls_ca; Go's TLS reads $SSL_CERT_FILE.)
  const std::string https = "https://" + d.metrics_address();
  RunResult scrape = RunProcess({"curl", "-sf", "--cacert", Path("ca.pem"), "-u",
                                 std::string("prometheus:") + kQueryToken, https + "/metrics"});
  ASSERT_EQ(scrape.exit_code, 0) << scrape.err;
  EXPECT_NE(scrape.out.find("cgoheap_ingest_events_total"), std::string::npos);
  RunResult plain = RunProcess({"curl", "-s", "-u", std::string("prometheus:") + kQueryToken,
                                "http://" + d.metrics_address() + "/metrics"});
  EXPECT_EQ(plain.out.find("cgoheap_ingest_events_total"), std::string::npos) << plain.out;
  RunResult untrusted = RunProcess({"curl", "-sf", "--cacert", Path("other.pem"), "-u",
                                    std::string("prometheus:") + kQueryToken, https + "/metrics"});
  EXPECT_NE(untrusted.exit_code, 0);
  RunResult pprof = RunProcess({CGOHEAP_GO_PPROF, "-top", "-unit=B",
                                "https://cgoheap:" + std::string(kQueryToken) + "@" +
                                    d.metrics_address() + "/debug/pprof/leaks"},
                               {"HOME=" + data.path(), "PPROF_TMPDIR=" + data.path(),
                                "SSL_CERT_FILE=" + Path("ca.pem")});
  ASSERT_EQ(pprof.exit_code, 0) << pprof.err;
  EXPECT_NE(pprof.out.find("134217728B"), std::string::npos) << pprof.out;
}

TEST_F(AuthTest, MutualTlsRefusesClientsWithoutACertificateFromItsCa) {
  TempDir data;
  std::vector<std::string> flags = Tls();
  flags.push_back("--tls-client-ca=" + Path("ca.pem"));
  Cgoheapd d(data.path(), flags);
  const std::string server = "--server=" + d.address();
  RunResult ps = Cli({"ps", server, "--tls-ca=" + Path("ca.pem")});
  EXPECT_NE(ps.exit_code, 0) << ps.out;
  ps = Cli({"ps", server, "--tls-ca=" + Path("ca.pem"), "--tls-cert=" + Path("client.pem"),
            "--tls-key=" + Path("client.key")});
  EXPECT_EQ(ps.exit_code, 0) << ps.err;
  // A client certificate the CA did not sign (the server's CA's sibling).
  ps = Cli({"ps", server, "--tls-ca=" + Path("ca.pem"), "--tls-cert=" + Path("other.pem"),
            "--tls-key=" + Path("other.key")});
  EXPECT_NE(ps.exit_code, 0);
}

TEST_F(AuthTest, PublicAddressesNeedTlsAndTokensOrAnExplicitFlag) {
  TempDir data;
  RunResult r = RunProcess({BinDir() + "/cgoheapd", "--listen=0.0.0.0:0", "--data=" + data.path()},
                           {}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--insecure-listen"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--tls-cert"), std::string::npos) << r.err;
  // TLS without tokens is not enough either.
  std::vector<std::string> argv = {BinDir() + "/cgoheapd", "--listen=0.0.0.0:0", "--data=" + data.path()};
  for (const std::string& f : Tls()) argv.push_back(f);
  r = RunProcess(argv, {}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.err;

  // With everything, it serves (stopped at once: this machine's other
  // interfaces get no traffic from the test).
  std::vector<std::string> guarded = Tokens();
  for (const std::string& f : Tls()) guarded.push_back(f);
  guarded.push_back("--listen=0.0.0.0:0");
  Cgoheapd d(data.path(), guarded);
  EXPECT_GT(d.pid(), 0);
  EXPECT_EQ(d.Stop(), 0);

  // Bad files are named, with what to do.
  std::ofstream(Path("short.token")) << "abc\n";
  r = RunProcess({BinDir() + "/cgoheapd", "--data=" + data.path(),
                  "--query-token-file=" + Path("short.token")},
                 {}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("openssl rand -hex 32"), std::string::npos) << r.err;
  r = RunProcess({BinDir() + "/cgoheapd", "--data=" + data.path(), "--tls-cert=" + Path("server.pem")},
                 {}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--tls-key"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cgoheap::testing
