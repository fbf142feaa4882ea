// How a cgoheap command reaches cgoheapd: its address, TLS, and the token
// of the role the command needs (server/auth/auth.h). The same flags and
// environment variables for every command:
//
//   --server=HOST:PORT     $CGOHEAP_SERVER      (default 127.0.0.1:7070)
//   --tls-ca=FILE          $CGOHEAP_TLS_CA      verify the server against this CA: turns TLS on
//   --tls                                       TLS, verified against the system's CAs
//   --tls-cert=FILE        $CGOHEAP_TLS_CERT    mutual TLS: this client's certificate ...
//   --tls-key=FILE         $CGOHEAP_TLS_KEY     ... and its key
//   --tls-server-name=NAME                      the name the certificate must carry, when
//                                               not the one in --server
//   --token-file=FILE      $CGOHEAP_TOKEN_FILE  the bearer token (first line that is one)
//
//   Connection conn;
//   ConnectionFlags(flags, &conn);
//   auto channel = conn.Dial();                 // error: says which file and why
//   grpc::ClientContext ctx; conn.Authorize(&ctx);
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/flags.h"

namespace cgoheap::client {

struct Connection {
  std::string server;
  bool tls = false;
  std::string tls_ca_file, tls_cert_file, tls_key_file, tls_server_name;
  std::string token_file;

  // Reads the files named and makes the channel (not yet connected).
  absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(
      const grpc::ChannelArguments& args = grpc::ChannelArguments());
  // Adds the token (if any) to a call. After Dial.
  void Authorize(grpc::ClientContext* ctx) const;
  // "authorization" metadata value ("" without a token). After Dial.
  const std::string& authorization() const { return authorization_; }
  bool UsesTls() const { return tls || !tls_ca_file.empty(); }

 private:
  std::string authorization_;
};

// The flags above, with the environment's defaults. local_default: no
// --server means cgoheap run's own local cgoheapd (and $CGOHEAP_SERVER is
// not read).
void ConnectionFlags(FlagSet& flags, Connection* conn, bool local_default = false);

}  // namespace cgoheap::client
