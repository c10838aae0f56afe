// A real PostgreSQL for the shared-mode tests: initdb + pg_ctl in a fresh temporary folder (as the
// `postgres` system user when the tests run as root, as initdb refuses root), listening only on a Unix
// socket inside that folder, with password authentication (scram-sha-256) so the password-file path
// is exercised too. Stopped (and the folder removed) by the destructor, so a failing test stops it as
// well. No gtest in here beyond the skip check.
#pragma once

#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

#include "tests/support/shell.h"

namespace statetune::test_support {

class PostgresServer {
 public:
  // The folder with initdb/pg_ctl, or empty when PostgreSQL is not installed.
  static std::filesystem::path bin_dir() {
    for (const char* v : {"17", "16", "15"}) {
      const std::filesystem::path d = std::string("/usr/lib/postgresql/") + v + "/bin";
      if (std::filesystem::exists(d / "initdb") && std::filesystem::exists(d / "pg_ctl")) return d;
    }
    return {};
  }

  // initdb + start. Throws std::runtime_error with pg_ctl's output when something fails.
  PostgresServer() {
    bin_ = bin_dir();
    if (bin_.empty()) throw std::runtime_error("PostgreSQL binaries not found under /usr/lib/postgresql");
    const passwd* pg = nullptr;
    if (::geteuid() == 0) {
      pg = ::getpwnam("postgres");
      if (pg == nullptr) throw std::runtime_error("running as root and there is no `postgres` user to run initdb as");
      as_user_ = "runuser -u postgres -- ";
    }
    stop_abandoned();
    char tmpl[] = "/tmp/statetune-pg-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    std::ofstream(dir_ / "owner.pid") << ::getpid() << "\n";
    std::mt19937_64 rng(std::random_device{}());
    password_ = "pw-" + std::to_string(rng());
    std::ofstream(dir_ / "password") << password_ << "\n";
    if (pg != nullptr) {
      if (::chown(dir_.c_str(), pg->pw_uid, pg->pw_gid) != 0 ||
          ::chown((dir_ / "password").c_str(), pg->pw_uid, pg->pw_gid) != 0) {
        throw std::runtime_error("cannot chown the PostgreSQL test folder");
      }
    }
    sh(bin("initdb") + " --no-sync -A scram-sha-256 -U statetune --pwfile=" + quote((dir_ / "password").string()) +
       " -D " + quote(data().string()));
    start();
  }
  ~PostgresServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // pg_ctl start/stop; a stopped server keeps its data, start() brings it back on the same socket.
  void start() {
    sh(bin("pg_ctl") + " -w -t 60 -D " + quote(data().string()) + " -l " + quote((dir_ / "server.log").string()) +
       " -o " + quote("-c listen_addresses='' -c unix_socket_directories='" + dir_.string() +
                      "' -c fsync=off -c full_page_writes=off -c max_connections=200 -p 5432") +
       " start");
    running_ = true;
  }
  bool running() const { return running_; }
  void stop() {
    if (!running_) return;
    running_ = false;
    sh(bin("pg_ctl") + " -w -t 60 -D " + quote(data().string()) + " -m fast stop", /*check=*/false);
  }

  // A URL without the password (it comes from password_file()), for database `db`.
  std::string url(const std::string& db = "postgres", const std::string& user = "statetune") const {
    return "postgresql://" + user + "@/" + db + "?host=" + dir_.string() + "&port=5432";
  }
  std::filesystem::path password_file() const { return dir_ / "password"; }
  const std::string& password() const { return password_; }
  // Runs SQL through psql as the superuser; returns its output (unaligned, tuples only).
  std::string psql(const std::string& sql, const std::string& db = "postgres") const {
    return sh("PGPASSWORD=" + quote(password_) + " " + (bin_ / "psql").string() + " -X -q -A -t -h " +
              quote(dir_.string()) + " -p 5432 -U statetune -d " + quote(db) + " -c " + quote(sql));
  }
  // A fresh, empty database; returns its URL.
  std::string create_database(const std::string& name) const {
    psql("CREATE DATABASE " + name);
    return url(name);
  }
  std::string log() const { return slurp(dir_ / "server.log"); }

 private:
  // A test binary that crashed never ran its destructor: stop the servers of owners that are gone.
  void stop_abandoned() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/tmp", ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("statetune-pg-", 0) != 0 || !std::filesystem::exists(e.path() / "owner.pid")) continue;
      const pid_t owner = static_cast<pid_t>(std::atol(slurp(e.path() / "owner.pid").c_str()));
      if (owner <= 0 || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
      dir_ = e.path();
      if (std::filesystem::exists(data() / "postmaster.pid")) {
        sh(bin("pg_ctl") + " -w -t 30 -D " + quote(data().string()) + " -m immediate stop", /*check=*/false);
      }
      std::filesystem::remove_all(dir_, ec);
    }
    dir_.clear();
  }
  std::filesystem::path data() const { return dir_ / "data"; }
  std::string bin(const char* tool) const { return as_user_ + (bin_ / tool).string(); }
  std::string sh(const std::string& command, bool check = true) const {
    const auto r = run_shell(command, dir_);
    if (check && r.code != 0) {
      throw std::runtime_error("`" + command + "` failed (" + std::to_string(r.code) + "): " + r.out + r.err);
    }
    return r.out;
  }

  std::filesystem::path bin_, dir_;
  std::string password_, as_user_;
  bool running_ = false;
};

}  // namespace statetune::test_support
