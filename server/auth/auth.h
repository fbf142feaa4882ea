// Who may call what on cgoheapd: bearer tokens in two roles, read from files,
// and TLS credentials.
//
// Roles: *ingest* may only stream (cgoheap.v1.Ingest), *query* may only read
// (cgoheap.v1.Query and server reflection). The health service is open. A
// role with no token file is open (loopback development); cgoheapd refuses
// to serve other addresses that way unless told to (server/main.cc).
//
// A token travels as `authorization: Bearer TOKEN` call metadata. Token
// files hold one token per line ('#' comments and blank lines ignored), so a
// new token can be added before the old one is removed; only their SHA-256
// digests are kept, compared in constant time.
//
//   auto auth = TokenAuth::Load({.ingest_token_file = "/run/secrets/ingest"});
//   grpc::Status st = (*auth)->Check(Role::kIngest, ctx->client_metadata());
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include "absl/status/statusor.h"

namespace cgoheap::server {

class ServerMetrics;

enum class Role { kIngest = 0, kQuery = 1 };
const char* RoleName(Role role);

// The role a method ("/package.Service/Method") needs; nullopt: open (health).
// Methods of services cgoheapd does not serve need the query role.
std::optional<Role> RoleOfMethod(std::string_view path);

struct AuthOptions {
  std::string ingest_token_file;  // empty: streaming needs no token
  std::string query_token_file;   // empty: reading needs no token
  // TLS: the server's certificate chain and key (PEM). Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Mutual TLS: clients must present a certificate signed by this CA.
  std::string tls_client_ca_file;
};

// Thread-safe after Load.
class TokenAuth {
 public:
  static absl::StatusOr<std::shared_ptr<TokenAuth>> Load(const AuthOptions& options);

  bool Required(Role role) const { return !digests_[static_cast<int>(role)].empty(); }
  bool Tls() const { return tls_; }
  // OK, or UNAUTHENTICATED (no token, or one no role has) or
  // PERMISSION_DENIED (a token of the other role), each with what to do;
  // failures are counted in metrics (if set).
  grpc::Status Check(Role role,
                     const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;
  // The same for the HTTP port (/metrics, /debug/pprof/): the value of an
  // Authorization header, "Basic base64(USER:TOKEN)" (any user name; what
  // Prometheus' basic_auth and go tool pprof's http://USER:TOKEN@HOST/ send)
  // or "Bearer TOKEN". UNAUTHENTICATED or PERMISSION_DENIED, counted.
  absl::Status CheckHttp(Role role, std::string_view authorization) const;
  void SetMetrics(ServerMetrics* metrics) { metrics_ = metrics; }
  // Whether token is one of the role's. Not counted.
  bool Accepts(Role role, std::string_view token) const;

  // The gRPC port's credentials: TLS, or without a certificate plaintext.
  // Where there are tokens, a metadata processor checks them before any
  // handler runs, so that server reflection follows the query role too; gRPC
  // runs one only on secure credentials, which plaintext on loopback gets
  // from gRPC's local credentials (loopback peers only, so not for another
  // address served with --insecure-listen: there reflection is open).
  std::shared_ptr<grpc::ServerCredentials> Credentials(std::shared_ptr<TokenAuth> self,
                                                       bool loopback) const;

 private:
  using Digest = std::array<uint8_t, 32>;
  bool Has(Role role, const Digest& d) const;
  // Why a token (none: nullopt) may not act in role: nullptr when it may,
  // else "missing", "wrong_role" or "unknown" (counted as such).
  const char* Refusal(Role role, std::optional<std::string_view> token) const;
  std::vector<Digest> digests_[2];
  bool tls_ = false;
  std::string cert_, key_, client_ca_;
  ServerMetrics* metrics_ = nullptr;
};

// Whether HOST:PORT only accepts connections from this machine.
bool IsLoopbackAddress(const std::string& listen);

// Reads a PEM file (certificate, key or CA); the error names `what` and the
// path.
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what);

// Reads a token file: one token per line, at least one, each of 16 or more
// characters. The error says which file and what to do.
absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path);

}  // namespace cgoheap::server
