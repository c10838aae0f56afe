// bind_http_server: the listen backlog that a burst of new connections needs, and no port sharing.
#include "server/common/http_bind.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <vector>

namespace statetune::common {
namespace {

// Starts a non-blocking connect to 127.0.0.1:port; returns the socket.
int start_connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  return fd;
}

// Nobody accepts on the bound server, so every completed handshake waits in the kernel's accept
// queue: with the library's backlog of 5 only 6 connections ever complete (the SYNs of the others are
// dropped and retried, forever while the queue stays full); with ours all of them complete at once.
TEST(HttpBindTest, AConnectionBurstFitsTheAcceptQueue) {
  httplib::Server server;
  const int port = bind_http_server(server, "127.0.0.1", 0);
  ASSERT_GT(port, 0);
  constexpr int kBurst = 64;
  std::vector<int> fds;
  for (int i = 0; i < kBurst; ++i) fds.push_back(start_connect(port));
  std::vector<bool> connected(kBurst, false);
  int done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (done < kBurst && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < kBurst; ++i) {
      if (connected[i]) continue;
      pollfd p{fds[i], POLLOUT, 0};
      if (::poll(&p, 1, 10) == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
        ASSERT_EQ(err, 0) << "connection " << i;
        connected[i] = true;
        ++done;
      }
    }
  }
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(done, kBurst) << "connections the accept queue took";
}

// The library's default socket options set SO_REUSEPORT: a second process on the same port would
// start and take part of the connections. Ours refuses it.
TEST(HttpBindTest, ASecondServerCannotBindTheSamePort) {
  httplib::Server first, second;
  const int port = bind_http_server(first, "127.0.0.1", 0);
  ASSERT_GT(port, 0);
  EXPECT_EQ(bind_http_server(second, "127.0.0.1", port), -1);
}

}  // namespace
}  // namespace statetune::common
