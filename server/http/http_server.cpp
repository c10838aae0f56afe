#include "server/http/http_server.h"

#include <stdexcept>

#include "server/common/http_bind.h"
#include "server/common/logging.h"
#include "server/http/api_error.h"

namespace statetune::http {

namespace {

const char* message_for_status(int status) {
  switch (status) {
    case 400: return "malformed HTTP request";
    case 404: return "no such route";
    case 405: return "method not allowed on this route";
    case 411: return "send the request body with a Content-Length (chunked bodies are not accepted)";
    case 413: return "the request body is larger than the server accepts";
    case 414: return "the request URI is too long";
    case 415: return "compressed request bodies (Content-Encoding) are not accepted";
    default: return status >= 500 ? "internal error" : "request refused";
  }
}

}  // namespace

void split_host_port(const std::string& address, std::string& host, int& port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw std::invalid_argument("listen address '" + address + "' is not host:port");
  }
  host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string p = address.substr(colon + 1);
  if (p.find_first_not_of("0123456789") != std::string::npos || p.size() > 5 || std::stoi(p) > 65535) {
    throw std::invalid_argument("listen address '" + address + "' has no valid port");
  }
  port = std::stoi(p);
}

HttpServer::HttpServer(HttpOptions options) : options_(std::move(options)) {
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    if (options_.tls_cert_file.empty() || options_.tls_key_file.empty()) {
      throw std::runtime_error("HTTPS needs both a certificate and a key file");
    }
    auto ssl = std::make_unique<httplib::SSLServer>(options_.tls_cert_file.c_str(), options_.tls_key_file.c_str());
    if (!ssl->is_valid()) throw std::runtime_error("cannot use the TLS certificate/key for the HTTP listener");
    server_ = std::move(ssl);
    tls_ = true;
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& s = *server_;
  s.set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
  s.set_read_timeout(static_cast<time_t>(options_.read_timeout.count()));
  s.set_write_timeout(static_cast<time_t>(options_.write_timeout.count()));
  s.set_keep_alive_timeout(static_cast<time_t>(options_.keep_alive_timeout.count()));
  s.set_keep_alive_max_count(static_cast<size_t>(options_.keep_alive_max));
  // Every SSE event is a small write that must leave at once: with Nagle's algorithm it waited for the
  // client's delayed ACK (time to first token 87 ms instead of 7 ms over loopback, measured with
  // statetune-loadgen --api http).
  s.set_tcp_nodelay(true);
  const size_t threads = static_cast<size_t>(std::max<int64_t>(1, options_.threads));
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  const uint64_t max_body = static_cast<uint64_t>(options_.max_body_bytes);
  s.set_pre_routing_handler([max_body](const httplib::Request& req, httplib::Response& res) {
    // Refused before the body is read: cpp-httplib would otherwise read and discard a declared body
    // above the limit to the end (a 100 GB Content-Length holds a thread until the read timeout).
    // The unread body makes the connection unusable: it is closed after the answer.
    // cpp-httplib 0.11 applies its payload limit to Content-Length bodies only: a chunked body would be
    // read into memory whole, however large. Bodies must declare their length (OpenAI's SDKs do).
    if (req.has_header("Transfer-Encoding")) {
      res.set_header("Connection", "close");
      write_error(res, ApiError(411, "invalid_request_error", message_for_status(411)));
      return httplib::Server::HandlerResponse::Handled;
    }
    const std::string length = req.get_header_value("Content-Length");
    if (!length.empty() && (length.size() > 19 || length.find_first_not_of("0123456789") != std::string::npos ||
                            std::stoull(length) > max_body)) {
      res.set_header("Connection", "close");
      write_error(res, ApiError(413, "invalid_request_error", message_for_status(413)));
      return httplib::Server::HandlerResponse::Handled;
    }
    const std::string encoding = req.get_header_value("Content-Encoding");
    if (!encoding.empty() && encoding != "identity") {
      write_error(res, ApiError(415, "invalid_request_error", message_for_status(415)));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Called for every response with status >= 400: the library's own errors get OpenAI's shape; the
  // routes' errors already have it.
  s.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty() || res.content_length_ > 0) return httplib::Server::HandlerResponse::Unhandled;
    write_error(res, ApiError(res.status, "", message_for_status(res.status)));
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
    std::string what = "unknown";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    const std::string id = common::new_request_id();
    common::log_event(spdlog::level::err, "http.internal_error",
                      {{"path", req.path.substr(0, 128)}, {"request_id", id}, {"message", what}});
    write_error(res, ApiError(500, "server_error", "internal error (request " + id + ")"));
  });
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  std::string host;
  int port = 0;
  split_host_port(options_.listen, host, port);
  port_ = common::bind_http_server(*server_, host, port);
  if (port_ <= 0) {
    port_ = 0;
    throw std::runtime_error("cannot listen for HTTP on " + options_.listen + " (choose another --http-listen)");
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace statetune::http
