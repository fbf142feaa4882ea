#include "server/http/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cgoheap::server {
namespace {

constexpr size_t kMaxHead = 16 << 10;

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
  }
}

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = HexDigit(s[i + 1]), lo = HexDigit(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

HttpResponse HttpResponse::Text(int status, std::string message) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(message);
  return r;
}

struct HttpServer::SslCtx {
  SSL_CTX* ctx = nullptr;
  ~SslCtx() {
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
};

struct HttpServer::Connection {
  // Closed under mu, so that Stop never shuts down a descriptor number the
  // connection has closed and something else may have been given since.
  absl::Mutex mu;
  int fd = -1;
  SSL* ssl = nullptr;
  std::string peer;
  std::thread thread;
  std::atomic<bool> done{false};

  // Whole or nothing; false on an error or a timeout.
  bool Write(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w;
      if (ssl != nullptr) {
        int r = SSL_write(ssl, p, static_cast<int>(std::min<size_t>(n, 1 << 30)));
        w = r > 0 ? r : -1;
      } else {
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
      }
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  // Bytes read (0: end of stream, error or timeout).
  ssize_t Read(char* p, size_t n) {
    if (ssl != nullptr) {
      int r = SSL_read(ssl, p, static_cast<int>(n));
      return r > 0 ? r : 0;
    }
    for (;;) {
      ssize_t r = recv(fd, p, n, 0);
      if (r < 0 && errno == EINTR) continue;
      return r > 0 ? r : 0;
    }
  }
};

HttpServer::HttpServer() = default;
HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(const std::string& path, Handler handler) {
  handlers_[path] = std::move(handler);
}

absl::Status HttpServer::Start(const Options& options) {
  options_ = options;
  const std::string& address = options.address;
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serve HTTP on '", address, "': give HOST:PORT, e.g. 127.0.0.1:9464"));
  }
  std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (!options.tls_cert_file.empty()) {
    ssl_ctx_ = std::make_unique<SslCtx>();
    ssl_ctx_->ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX* ctx = ssl_ctx_->ctx;
    if (ctx == nullptr) return absl::InternalError("OpenSSL: " + OpenSslError());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, options.tls_cert_file.c_str()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot use ", options.tls_cert_file, " as the certificate: ", OpenSslError()));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot use ", options.tls_key_file, " as the certificate's key: ", OpenSslError()));
    }
    if (!options.tls_client_ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, options.tls_client_ca_file.c_str(), nullptr) != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot use ", options.tls_client_ca_file, " as the client CA: ", OpenSslError()));
      }
      SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(options.tls_client_ca_file.c_str()));
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serve HTTP on ", address, ": ", gai_strerror(rc)));
  }
  std::string why = "no address";
  for (addrinfo* ai = res; ai != nullptr && listen_fd_ < 0; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) {
      listen_fd_ = fd;
    } else {
      why = strerror(errno);
      close(fd);
    }
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", address, ": ", why));
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  int bound_port = ss.ss_family == AF_INET6
                       ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                       : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  bound_ = absl::StrCat(address.substr(0, colon), ":", bound_port);
  if (pipe2(wake_, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void HttpServer::Reap(bool all) {
  std::list<std::unique_ptr<Connection>> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (all || (*it)->done.load()) {
        if (all) {  // ends its reads and writes
          absl::MutexLock fd_lock(&(*it)->mu);
          if ((*it)->fd >= 0) shutdown((*it)->fd, SHUT_RDWR);
        }
        finished.splice(finished.end(), connections_, it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) c->thread.join();
}

void HttpServer::AcceptLoop() {
  while (!stopping_.load()) {
    Reap(false);
    size_t active;
    {
      absl::MutexLock lock(&mu_);
      active = connections_.size();
    }
    pollfd fds[2] = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    // At the limit, only the wake pipe is watched (and finished connections
    // reaped every 100 ms); new connections wait in the backlog.
    const bool full = active >= static_cast<size_t>(options_.max_connections);
    if (poll(fds, full ? 1 : 2, full ? 100 : 1000) <= 0) continue;
    if (fds[0].revents != 0) break;
    if (full || (fds[1].revents & POLLIN) == 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    timeval tv{options_.timeout_seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    char host[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, host, sizeof host);
    } else {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, host, sizeof host);
    }
    c->peer = host;
    Connection* raw = c.get();
    absl::MutexLock lock(&mu_);
    connections_.push_back(std::move(c));
    raw->thread = std::thread([this, raw] {
      Serve(raw);
      raw->done.store(true);
    });
  }
}

void HttpServer::Serve(Connection* c) {
  // A write to a connection the client closed raises SIGPIPE in the writing
  // thread (OpenSSL writes with write(2)): blocked here, it stays pending on
  // this thread, is dropped when the thread ends, and write returns EPIPE.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  auto finish = [c] {
    if (c->ssl != nullptr) {
      SSL_shutdown(c->ssl);
      SSL_free(c->ssl);
      c->ssl = nullptr;
    }
    absl::MutexLock lock(&c->mu);
    close(c->fd);
    c->fd = -1;
  };
  if (ssl_ctx_ != nullptr) {
    c->ssl = SSL_new(ssl_ctx_->ctx);
    if (c->ssl == nullptr || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_accept(c->ssl) != 1) {
      ERR_clear_error();
      if (c->ssl != nullptr) SSL_free(c->ssl);
      c->ssl = nullptr;
      finish();
      return;
    }
  }
  std::string head;
  char buf[4096];
  size_t end;
  while ((end = head.find("\r\n\r\n")) == std::string::npos) {
    if (head.size() > kMaxHead) {
      HttpResponse r = HttpResponse::Text(431, "the request head is larger than 16 KiB\n");
      std::string out = absl::StrCat("HTTP/1.1 431 ", Reason(431), "\r\nContent-Length: ",
                                     r.body.size(), "\r\nConnection: close\r\n\r\n", r.body);
      c->Write(out.data(), out.size());
      finish();
      return;
    }
    ssize_t n = c->Read(buf, sizeof buf);
    if (n <= 0) {
      finish();
      return;
    }
    head.append(buf, static_cast<size_t>(n));
  }
  head.resize(end);
  std::vector<std::string> lines = absl::StrSplit(head, "\r\n");
  std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
  HttpRequest req;
  req.peer = c->peer;
  HttpResponse resp;
  if (first.size() != 3 || first[2].rfind("HTTP/1.", 0) != 0 || first[1].empty() ||
      first[1][0] != '/') {
    resp = HttpResponse::Text(400, "expected a request line: GET /path HTTP/1.1\n");
  } else if (first[0] != "GET" && first[0] != "HEAD") {
    resp = HttpResponse::Text(405, absl::StrCat(first[0], " is not served here: use GET\n"));
    resp.headers.emplace_back("Allow", "GET, HEAD");
  } else {
    req.method = first[0];
    std::string_view target = first[1];
    size_t q = target.find('?');
    req.path = PercentDecode(target.substr(0, q), false);
    if (q != std::string_view::npos) {
      std::string_view rest = target.substr(q + 1);
      while (!rest.empty()) {
        size_t amp = rest.find('&');
        std::string_view kv = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
        if (kv.empty()) continue;
        size_t eq = kv.find('=');
        req.query[PercentDecode(kv.substr(0, eq), true)] =
            eq == std::string_view::npos ? "" : PercentDecode(kv.substr(eq + 1), true);
      }
    }
    for (size_t i = 1; i < lines.size(); ++i) {
      size_t colon = lines[i].find(':');
      if (colon == std::string::npos) continue;
      if (absl::AsciiStrToLower(lines[i].substr(0, colon)) == "authorization") {
        req.authorization = std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
      }
    }
    resp = Dispatch(req);
  }
  std::string out = absl::StrCat("HTTP/1.1 ", resp.status, " ", Reason(resp.status),
                                 "\r\nContent-Type: ", resp.content_type,
                                 "\r\nContent-Length: ", resp.body.size(), "\r\n");
  for (const auto& [k, v] : resp.headers) absl::StrAppend(&out, k, ": ", v, "\r\n");
  absl::StrAppend(&out, "Connection: close\r\n\r\n");
  if (c->Write(out.data(), out.size()) && req.method != "HEAD") {
    c->Write(resp.body.data(), resp.body.size());
  }
  finish();
}

HttpResponse HttpServer::Dispatch(const HttpRequest& req) const {
  auto it = handlers_.find(req.path);
  if (it == handlers_.end()) {
    std::string paths;
    for (const auto& [path, h] : handlers_) absl::StrAppend(&paths, "  ", path, "\n");
    return HttpResponse::Text(404, absl::StrCat("nothing at ", req.path, "; served here:\n", paths));
  }
  return it->second(req);
}

void HttpServer::Stop() {
  if (listen_fd_ < 0) return;
  stopping_.store(true);
  if (write(wake_[1], "x", 1) < 0) {
    // The acceptor still sees stopping_ within its poll timeout.
  }
  if (acceptor_.joinable()) acceptor_.join();
  Reap(true);
  close(listen_fd_);
  listen_fd_ = -1;
  close(wake_[0]);
  close(wake_[1]);
}

}  // namespace cgoheap::server
