// A small HTTP/1.1 server for cgoheapd's second port: Prometheus /metrics and
// the pprof profiles that `go tool pprof http://...` fetches. Over TLS when
// given a certificate (OpenSSL), optionally asking clients for certificates
// signed by a CA.
//
// One request per connection (the response says Connection: close), GET and
// HEAD only, request heads up to 16 KiB, a bounded number of connections
// served at once (each its own thread), and every read and write bounded by
// a timeout: a client that sends nothing, or sends slowly, holds a
// connection for at most that long.
//
//   HttpServer http;
//   http.Handle("/metrics", [&](const HttpRequest& r) { return HttpResponse{...}; });
//   absl::Status st = http.Start({.address = "127.0.0.1:9464"});
//   ... http.address() ...   // the port bound when 0 was asked
//   http.Stop();
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace cgoheap::server {

struct HttpRequest {
  std::string method;  // "GET" or "HEAD"
  std::string path;    // without the query, percent-decoded
  std::map<std::string, std::string> query;  // decoded; a repeated key keeps its last value
  std::string authorization;  // the Authorization header, as sent ("" if none)
  std::string peer;           // the client's address
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more headers
  // A plain-text response (a message for a person, ending with a newline).
  static HttpResponse Text(int status, std::string message);
};

// Thread-safe; handlers run on the connections' threads, concurrently.
class HttpServer {
 public:
  struct Options {
    std::string address;        // HOST:PORT; port 0 picks one
    std::string tls_cert_file;  // PEM chain; empty: plain HTTP
    std::string tls_key_file;
    std::string tls_client_ca_file;  // clients must present a certificate signed by it
    int max_connections = 64;        // more wait in the kernel's backlog
    int timeout_seconds = 30;        // each read and write of a connection
  };
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  HttpServer();
  ~HttpServer();  // Stop()

  // The handler of one path (exact match). Before Start.
  void Handle(const std::string& path, Handler handler);
  // Binds and starts serving. An error names the address or the file.
  absl::Status Start(const Options& options);
  // HOST:PORT actually bound.
  std::string address() const { return bound_; }
  bool tls() const { return ssl_ctx_ != nullptr; }
  // Stops accepting, ends the connections being served, and waits for them.
  void Stop();

 private:
  struct Connection;
  void AcceptLoop();
  void Serve(Connection* c);
  HttpResponse Dispatch(const HttpRequest& req) const;
  void Reap(bool all);

  Options options_;
  std::map<std::string, Handler> handlers_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::string bound_;
  struct SslCtx;
  std::unique_ptr<SslCtx> ssl_ctx_;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  absl::Mutex mu_;
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

// "a%20b+c" -> "a b c" (query strings); malformed escapes are kept as sent.
std::string PercentDecode(std::string_view s, bool plus_is_space);

}  // namespace cgoheap::server
