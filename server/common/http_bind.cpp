#include "server/common/http_bind.h"

#include <sys/socket.h>

namespace statetune::common {

int bind_http_server(httplib::Server& server, const std::string& host, int port) {
  // The library calls this for each address it tries and closes the ones that fail to bind, so the
  // last socket seen is the one listening.
  socket_t listening = INVALID_SOCKET;
  server.set_socket_options([&listening](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listening = sock;
  });
  const int bound = port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  server.set_socket_options([](socket_t) {});  // `listening` goes out of scope
  // listen() on a listening socket sets its backlog anew (Linux).
  if (bound > 0 && (listening == INVALID_SOCKET || ::listen(listening, kHttpListenBacklog) != 0)) return -1;
  return bound > 0 ? bound : -1;
}

}  // namespace statetune::common
