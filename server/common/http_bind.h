// Binding a cpp-httplib server to its port, for the HTTP API and /metrics alike.
#pragma once

#include <httplib.h>

#include <string>

namespace statetune::common {

// Pending connections the kernel queues for an HTTP listener (it caps this at net.core.somaxconn).
// Debian's cpp-httplib is a compiled library whose listen() backlog is 5: a burst of new connections
// (16 clients opening theirs at once) overflowed it, the kernel dropped the SYNs
// (TcpExtListenOverflows), each client retried after 1 s and some reads failed (HTTP time to first
// token p99 1.1 s against gRPC's 0.2 s in the load generator's side-by-side run).
constexpr int kHttpListenBacklog = 1024;

// Binds `server` to host:port (port 0: a free port) with kHttpListenBacklog and SO_REUSEADDR only:
// the library's default also sets SO_REUSEPORT, which lets a second process bind the same port and
// silently take half of the connections instead of failing to start. Returns the port, or -1.
int bind_http_server(httplib::Server& server, const std::string& host, int port);

}  // namespace statetune::common
