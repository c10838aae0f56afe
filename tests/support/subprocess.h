// Running a service or tool binary as a child process with its output in a log file, for the
// integration tests and the load generator (no gtest here: the load generator is not a test).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace statetune::test_support {

// Starts args[0] with the arguments `args`, stdout and stderr going to `log` (truncated); returns the
// child's pid. Throws std::runtime_error when fork fails; a failed exec exits the child with 127.
inline pid_t spawn_logged(std::vector<std::string> args, const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits for the child and returns its exit status (128 + the signal when a signal ended it).
inline int wait_exit_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Sends `sig` to the child and waits for it: its exit status as wait_exit_status says.
inline int signal_and_wait(pid_t pid, int sig = SIGTERM) {
  ::kill(pid, sig);
  return wait_exit_status(pid);
}

}  // namespace statetune::test_support
