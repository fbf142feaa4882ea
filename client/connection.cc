#include "client/connection.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "server/auth/auth.h"

namespace cgoheap::client {
namespace {

std::string Env(const char* name) {
  const char* v = getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

void ConnectionFlags(FlagSet& flags, Connection* conn, bool local_default) {
  conn->server = local_default ? "" : Env("CGOHEAP_SERVER");
  if (conn->server.empty() && !local_default) conn->server = "127.0.0.1:7070";
  conn->tls_ca_file = Env("CGOHEAP_TLS_CA");
  conn->tls_cert_file = Env("CGOHEAP_TLS_CERT");
  conn->tls_key_file = Env("CGOHEAP_TLS_KEY");
  conn->token_file = Env("CGOHEAP_TOKEN_FILE");
  flags.String("server", &conn->server, "HOST:PORT",
               local_default ? "send events to this cgoheapd (default: a local one, for this run only)"
                             : "cgoheapd address (default $CGOHEAP_SERVER or 127.0.0.1:7070)");
  flags.String("tls-ca", &conn->tls_ca_file, "FILE",
               "TLS, verifying cgoheapd against this CA certificate (PEM; default $CGOHEAP_TLS_CA)");
  flags.Bool("tls", &conn->tls, "TLS, verifying cgoheapd against the system's CAs");
  flags.String("tls-cert", &conn->tls_cert_file, "FILE",
               "mutual TLS: this client's certificate (PEM; default $CGOHEAP_TLS_CERT)");
  flags.String("tls-key", &conn->tls_key_file, "FILE",
               "mutual TLS: the client certificate's key (PEM; default $CGOHEAP_TLS_KEY)");
  flags.String("tls-server-name", &conn->tls_server_name, "NAME",
               "the name cgoheapd's certificate must carry, if not the host in --server");
  flags.String("token-file", &conn->token_file, "FILE",
               "the token to present (default $CGOHEAP_TOKEN_FILE): an ingest token for run, "
               "forward and bench, a query token for the others");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connection::Dial(const grpc::ChannelArguments& args) {
  authorization_.clear();
  if (!token_file.empty()) {
    absl::StatusOr<std::vector<std::string>> tokens = server::ReadTokenFile(token_file);
    if (!tokens.ok()) return tokens.status();
    authorization_ = absl::StrCat("Bearer ", tokens->front());
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: the client certificate and its private key");
  }
  if (!UsesTls()) {
    if (!tls_cert_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-cert needs TLS: give --tls-ca=FILE (or --tls) to say how to verify cgoheapd");
    }
    return grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions ssl;
  if (!tls_ca_file.empty()) {
    auto ca = server::ReadPem(tls_ca_file, "CA certificate (--tls-ca)");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  if (!tls_cert_file.empty()) {
    auto cert = server::ReadPem(tls_cert_file, "client certificate (--tls-cert)");
    if (!cert.ok()) return cert.status();
    auto key = server::ReadPem(tls_key_file, "client key (--tls-key)");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  grpc::ChannelArguments with_name = args;
  if (!tls_server_name.empty()) with_name.SetSslTargetNameOverride(tls_server_name);
  return grpc::CreateCustomChannel(server, grpc::SslCredentials(ssl), with_name);
}

void Connection::Authorize(grpc::ClientContext* ctx) const {
  if (!authorization_.empty()) ctx->AddMetadata("authorization", authorization_);
}

}  // namespace cgoheap::client
