// Certificates made at test time for the TLS tests of both services: a CA that signs a server
// certificate for 127.0.0.1 / localhost, and a second CA that signs nothing (a client trusting only it
// must be refused).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/loopback_http.h"

namespace statetune::test_support {

inline bool have_openssl() { return std::system("command -v openssl >/dev/null 2>&1") == 0; }

// Runs `command` through the shell; fails the test with its output when it exits non-zero.
inline void run_or_fail(const std::string& command, const std::filesystem::path& log) {
  const int rc = std::system((command + " >" + log.string() + " 2>&1").c_str());
  ASSERT_EQ(rc, 0) << command << "\n" << slurp(log);
}

// Writes ca.pem, other-ca.pem, server.pem and server.key into `dir`. Use with ASSERT_NO_FATAL_FAILURE.
inline void make_test_certificates(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const std::string d = dir.string();
  const std::filesystem::path log = dir / "openssl.log";
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2";
  run_or_fail("openssl req -x509" + ec + " -keyout " + d + "/ca.key -out " + d + "/ca.pem -subj /CN=statetune-test-ca", log);
  run_or_fail("openssl req -x509" + ec + " -keyout " + d + "/other-ca.key -out " + d + "/other-ca.pem -subj /CN=other-ca", log);
  run_or_fail("openssl req" + ec + " -keyout " + d + "/server.key -out " + d + "/server.csr -subj /CN=localhost", log);
  std::ofstream(dir / "san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  run_or_fail("openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -days 2 -extfile " + d + "/san.ext -out " + d + "/server.pem", log);
}

}  // namespace statetune::test_support
