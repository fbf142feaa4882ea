#include "server/auth/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"
#include "server/metrics/metrics.h"

namespace cgoheap::server {
namespace {

constexpr size_t kMinTokenChars = 16;
constexpr std::string_view kBearer = "Bearer ";

std::array<uint8_t, 32> DigestOf(std::string_view token) {
  Sha256 h;
  h.Update(token);
  return h.Final();
}

// Equal digests, in time that does not depend on where they differ.
bool SameDigest(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the ", what, " ", path, " (a PEM file this user can read)"));
  }
  if (!absl::StrContains(text.str(), "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not PEM: the ", what,
                                                   " must be a PEM file (-----BEGIN ...)"));
  }
  return text.str();
}

namespace {

// Validates tokens for methods that the in-method checks cannot reach
// (server reflection) over TLS; gRPC runs it before any handler.
class TokenProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenProcessor(std::shared_ptr<const TokenAuth> auth) : auth_(std::move(auth)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext*, OutputMetadata*,
                       OutputMetadata*) override {
    auto path = metadata.find(":path");
    std::optional<Role> role =
        RoleOfMethod(path == metadata.end() ? std::string_view()
                                            : std::string_view(path->second.data(),
                                                               path->second.size()));
    if (!role.has_value()) return grpc::Status::OK;
    return auth_->Check(*role, metadata);
  }

 private:
  std::shared_ptr<const TokenAuth> auth_;
};

}  // namespace

const char* RoleName(Role role) { return role == Role::kIngest ? "ingest" : "query"; }

std::optional<Role> RoleOfMethod(std::string_view path) {
  if (path.starts_with("/grpc.health.v1.Health/")) return std::nullopt;
  if (path.starts_with("/cgoheap.v1.Ingest/")) return Role::kIngest;
  return Role::kQuery;
}

absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read the token file ", path, ": it must exist and be readable by this user"));
  }
  std::vector<std::string> tokens;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::string_view t = line;
    while (!t.empty() && absl::ascii_isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
    while (!t.empty() && absl::ascii_isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
    if (t.empty() || t[0] == '#') continue;
    if (t.size() < kMinTokenChars || t.find_first_of(" \t") != std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", n, ": a token must be one word of at least ", kMinTokenChars,
          " characters (make one with: openssl rand -hex 32)"));
    }
    tokens.emplace_back(t);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the token file ", path, " holds no token (one per line; make one with: openssl rand -hex 32)"));
  }
  return tokens;
}

absl::StatusOr<std::shared_ptr<TokenAuth>> TokenAuth::Load(const AuthOptions& options) {
  auto auth = std::make_shared<TokenAuth>();
  const std::string* files[2] = {&options.ingest_token_file, &options.query_token_file};
  for (int r = 0; r < 2; ++r) {
    if (files[r]->empty()) continue;
    absl::StatusOr<std::vector<std::string>> tokens = ReadTokenFile(*files[r]);
    if (!tokens.ok()) return tokens.status();
    for (const std::string& t : *tokens) auth->digests_[r].push_back(DigestOf(t));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: the certificate and its private key");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca asks clients for certificates, which needs TLS: give --tls-cert and "
        "--tls-key too");
  }
  if (!options.tls_cert_file.empty()) {
    auto cert = ReadPem(options.tls_cert_file, "certificate (--tls-cert)");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(options.tls_key_file, "private key (--tls-key)");
    if (!key.ok()) return key.status();
    auth->tls_ = true;
    auth->cert_ = std::move(*cert);
    auth->key_ = std::move(*key);
    if (!options.tls_client_ca_file.empty()) {
      auto ca = ReadPem(options.tls_client_ca_file, "client CA (--tls-client-ca)");
      if (!ca.ok()) return ca.status();
      auth->client_ca_ = std::move(*ca);
    }
  }
  return auth;
}

bool TokenAuth::Has(Role role, const Digest& d) const {
  bool found = false;
  for (const Digest& known : digests_[static_cast<int>(role)]) found |= SameDigest(known, d);
  return found;
}

bool TokenAuth::Accepts(Role role, std::string_view token) const {
  return Has(role, DigestOf(token));
}

const char* TokenAuth::Refusal(Role role, std::optional<std::string_view> token) const {
  if (!Required(role)) return nullptr;
  if (!token.has_value()) return "missing";
  Digest d = DigestOf(*token);
  if (Has(role, d)) return nullptr;
  return Has(role == Role::kIngest ? Role::kQuery : Role::kIngest, d) ? "wrong_role" : "unknown";
}

grpc::Status TokenAuth::Check(
    Role role, const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  if (!Required(role)) return grpc::Status::OK;
  auto it = metadata.find("authorization");
  std::optional<std::string_view> token;
  if (it != metadata.end()) {
    std::string_view value(it->second.data(), it->second.size());
    if (value.starts_with(kBearer)) token = value.substr(kBearer.size());
  }
  const char* reason = Refusal(role, token);
  if (reason == nullptr) return grpc::Status::OK;
  if (metrics_ != nullptr) metrics_->OnAuthFailure(RoleName(role), reason);
  const Role other = role == Role::kIngest ? Role::kQuery : Role::kIngest;
  if (std::string_view(reason) == "missing") {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        absl::StrCat("this cgoheapd needs a token of the ", RoleName(role),
                     " role: pass --token-file=FILE (or set CGOHEAP_TOKEN_FILE) naming a file "
                     "that holds one"));
  }
  if (std::string_view(reason) == "wrong_role") {
    return grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("the token given is of the ", RoleName(other), " role; this call needs one of the ",
                     RoleName(role), " role (",
                     role == Role::kIngest ? "ingest tokens stream events" : "query tokens read",
                     ")"));
  }
  return grpc::Status(
      grpc::StatusCode::UNAUTHENTICATED,
      absl::StrCat("the token given is not one this cgoheapd knows for the ", RoleName(role),
                   " role: check --token-file against the server's token files"));
}

absl::Status TokenAuth::CheckHttp(Role role, std::string_view authorization) const {
  if (!Required(role)) return absl::OkStatus();
  std::optional<std::string_view> token;
  std::string decoded;
  if (authorization.starts_with(kBearer)) {
    token = authorization.substr(kBearer.size());
  } else if (authorization.starts_with("Basic ")) {
    std::string b64(authorization.substr(6));
    if (absl::Base64Unescape(b64, &decoded)) {
      size_t colon = decoded.find(':');
      if (colon != std::string::npos) token = std::string_view(decoded).substr(colon + 1);
    }
  }
  const char* reason = Refusal(role, token);
  if (reason == nullptr) return absl::OkStatus();
  if (metrics_ != nullptr) metrics_->OnAuthFailure(RoleName(role), reason);
  const std::string how = absl::StrCat(
      "send a token of the ", RoleName(role),
      " role as the basic-auth password (Prometheus: basic_auth with password_file; go tool "
      "pprof: http://cgoheap:TOKEN@HOST:PORT/...) or as Authorization: Bearer TOKEN");
  if (std::string_view(reason) == "wrong_role") {
    return absl::PermissionDeniedError(
        absl::StrCat("the token given is not of the ", RoleName(role), " role: ", how));
  }
  return absl::UnauthenticatedError(absl::StrCat(
      std::string_view(reason) == "missing" ? "this cgoheapd needs a token: "
                                            : "the token given is not one this cgoheapd knows: ",
      how));
}

bool IsLoopbackAddress(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

std::shared_ptr<grpc::ServerCredentials> TokenAuth::Credentials(std::shared_ptr<TokenAuth> self,
                                                                bool loopback) const {
  if (!tls_) {
    if (!loopback || (!Required(Role::kIngest) && !Required(Role::kQuery))) {
      return grpc::InsecureServerCredentials();
    }
    auto local = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
    local->SetAuthMetadataProcessor(std::make_shared<TokenProcessor>(std::move(self)));
    return local;
  }
  grpc::SslServerCredentialsOptions ssl(
      client_ca_.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                         : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = client_ca_;
  ssl.pem_key_cert_pairs.push_back({key_, cert_});
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(ssl);
  creds->SetAuthMetadataProcessor(std::make_shared<TokenProcessor>(std::move(self)));
  return creds;
}

}  // namespace cgoheap::server
