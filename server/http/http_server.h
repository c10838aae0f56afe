// The HTTP listener of a service (--http-listen): cpp-httplib with the limits every outside input gets.
//   - a request body above max_body_bytes is refused with 413 before it is read (Content-Length); a
//     body without a length (Transfer-Encoding: chunked), which cpp-httplib 0.11 would read whole
//     whatever its size, is refused with 411; bodies with a Content-Encoding are refused (415), so no
//     compressed body can expand past the limit;
//   - request line and headers are capped by cpp-httplib (8 KiB each);
//   - a connection that sends nothing for read_timeout, or cannot take a write for write_timeout, is
//     closed; an idle keep-alive connection after keep_alive_timeout, and after keep_alive_max requests;
//   - `threads` handler threads: each open connection holds one while it is served, the rest wait.
// Every error response, the library's own (404, 413, ...) included, has OpenAI's error shape.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace statetune::http {

struct HttpOptions {
  std::string listen;                       // host:port; port 0 picks a free one
  std::string tls_cert_file, tls_key_file;  // both (HTTPS) or neither
  int64_t max_body_bytes = int64_t{1} << 20;
  std::chrono::seconds read_timeout{30};
  std::chrono::seconds write_timeout{30};
  std::chrono::seconds keep_alive_timeout{5};
  int64_t keep_alive_max = 100;  // requests per connection
  int64_t threads = 16;
  bool serve_metrics = false;  // GET /metrics here too (the services add the route: --http-metrics)
};

class HttpServer {
 public:
  // Throws std::runtime_error when the TLS files cannot be used.
  explicit HttpServer(HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Register routes here before start().
  httplib::Server& routes() { return *server_; }

  // Binds and serves on a thread of its own. Throws std::runtime_error naming the address when it
  // cannot listen.
  void start();
  // Stops accepting and closes the listener; handlers still running finish first. Idempotent.
  void stop();
  int port() const { return port_; }
  bool tls() const { return tls_; }

 private:
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  bool tls_ = false;
};

// "host:port" / "[v6]:port" split; throws std::invalid_argument naming the flag value when malformed.
void split_host_port(const std::string& address, std::string& host, int& port);

}  // namespace statetune::http
