// The services' one failure -> status mapping (server/common/grpc_status.h) and the shared code
// names: every engine error kind and exception type gets its precise code, INTERNAL never carries
// the exception's text, UNKNOWN never leaves, and every message is bounded and printable.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "server/common/grpc_status.h"
#include "server/common/status_codes.h"
#include "server/engine/adapters/adapter_pool.h"
#include "server/engine/adapters/adapter_storage.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/runtime/scheduler.h"
#include "server/engine/util/bounded_json.h"

namespace statetune::common {
namespace {
using engine::ErrorKind;
using grpc::StatusCode;

template <typename E>
grpc::Status status_of(const E& e, std::string* detail = nullptr) {
  return to_grpc_status(std::make_exception_ptr(e), "req-1", detail);
}

TEST(GrpcStatus, EveryErrorKindHasItsCode) {
  const std::pair<ErrorKind, StatusCode> table[] = {
      {ErrorKind::kInvalidArgument, StatusCode::INVALID_ARGUMENT},
      {ErrorKind::kNotFound, StatusCode::NOT_FOUND},
      {ErrorKind::kPermissionDenied, StatusCode::PERMISSION_DENIED},
      {ErrorKind::kResourceExhausted, StatusCode::RESOURCE_EXHAUSTED},
      {ErrorKind::kUnavailable, StatusCode::UNAVAILABLE},
      {ErrorKind::kFailedPrecondition, StatusCode::FAILED_PRECONDITION},
      {ErrorKind::kInternal, StatusCode::INTERNAL},
      {ErrorKind::kNone, StatusCode::INTERNAL},
  };
  for (const auto& [kind, code] : table) {
    SCOPED_TRACE(engine::error_kind_name(kind));
    EXPECT_EQ(to_grpc_code(kind), code);
    const grpc::Status st = status_of(engine::EngineError(kind, "what happened at /srv/secret"));
    EXPECT_EQ(st.error_code(), code);
    EXPECT_EQ(status_code_name(code), engine::error_kind_name(kind == ErrorKind::kNone ? ErrorKind::kInternal : kind))
        << "error kinds and code labels are spelled alike";
    if (code == StatusCode::INTERNAL) {
      EXPECT_EQ(st.error_message(), "internal error (request req-1); the server log has the details");
    } else {
      EXPECT_EQ(st.error_message(), "what happened at /srv/secret");
    }
  }
}

TEST(GrpcStatus, EngineExceptionsMapByTheirKind) {
  EXPECT_EQ(status_of(engine::AdapterNotFound("adapter 'x' not found")).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status_of(engine::AdapterQuotaExceeded("quota")).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status_of(engine::AdapterPoolExhausted("pool")).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status_of(engine::AdapterStorageUnavailable("the adapter database is unavailable; retry")).error_code(),
            StatusCode::UNAVAILABLE);
  EXPECT_EQ(status_of(engine::QueueFull("the request queue is full")).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status_of(engine::NotAccepting("draining")).error_code(), StatusCode::UNAVAILABLE);
  const grpc::Status bad = status_of(std::invalid_argument("the prompt is empty"));
  EXPECT_EQ(bad.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad.error_message(), "the prompt is empty");
  EXPECT_EQ(status_of(engine::JsonInputError("line 1: not JSON")).error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST(GrpcStatus, UnexpectedFailuresAreInternalWithARequestIdAndTheTextOnlyInTheDetail) {
  std::string detail;
  const grpc::Status st = status_of(std::runtime_error("cannot open /var/lib/statetune/x"), &detail);
  EXPECT_EQ(st.error_code(), StatusCode::INTERNAL);
  EXPECT_NE(st.error_message().find("req-1"), std::string::npos);
  EXPECT_EQ(st.error_message().find('/'), std::string::npos) << "a server path reached the client";
  EXPECT_EQ(detail, "cannot open /var/lib/statetune/x");
  const grpc::Status odd = to_grpc_status(std::make_exception_ptr(42), "req-2", &detail);
  EXPECT_EQ(odd.error_code(), StatusCode::INTERNAL);
  EXPECT_NE(odd.error_message().find("req-2"), std::string::npos);
}

TEST(GrpcStatus, MessagesAreBoundedPrintableAndNeverUnknown) {
  EXPECT_EQ(bounded_status(grpc::Status(StatusCode::UNKNOWN, "x")).error_code(), StatusCode::INTERNAL);
  EXPECT_TRUE(bounded_status(grpc::Status::OK).ok());
  // Clean text (UTF-8 included) up to the bound passes as it is.
  const std::string utf8 = "name caf\xC3\xA9 is taken";
  EXPECT_EQ(bounded_status(grpc::Status(StatusCode::NOT_FOUND, utf8)).error_message(), utf8);
  // Longer clean text is cut on a character boundary and marked.
  std::string long_text(kMaxStatusMessageBytes - 10, 'a');
  for (int i = 0; i < 100; ++i) long_text += "\xC3\xA9";
  const std::string cut = bounded_status(grpc::Status(StatusCode::INVALID_ARGUMENT, long_text)).error_message();
  EXPECT_LE(cut.size(), kMaxStatusMessageBytes);
  EXPECT_EQ(cut.substr(cut.size() - 9), "... (cut)");
  EXPECT_EQ(cut.compare(0, 10, long_text, 0, 10), 0);
  EXPECT_NE(static_cast<unsigned char>(cut[cut.size() - 10]), 0xC3) << "a character was split";
  // A NUL, a control character or bytes that are not UTF-8 are escaped, within the metadata limit.
  const std::string nul = bounded_status(grpc::Status(StatusCode::INVALID_ARGUMENT, std::string("a\0b", 3))).error_message();
  EXPECT_EQ(nul, "a\\x00b");
  const std::string binary(100000, '\xFF');
  const std::string escaped = bounded_status(grpc::Status(StatusCode::INVALID_ARGUMENT, binary)).error_message();
  EXPECT_LE(escaped.size(), 4 * kMaxStatusMessageBytes / 2 + 32);
  EXPECT_LT(escaped.size(), size_t{8} << 10) << "over gRPC's default metadata limit";
  EXPECT_EQ(escaped.find('\xFF'), std::string::npos);
}

TEST(StatusCodes, OneTableForLabelsAndConstants) {
  EXPECT_EQ(status_code_name(StatusCode::OK), "ok");
  EXPECT_EQ(status_code_name(StatusCode::INVALID_ARGUMENT), "invalid_argument");
  EXPECT_EQ(status_code_name(StatusCode::UNAUTHENTICATED), "unauthenticated");
  EXPECT_EQ(status_code_name(static_cast<StatusCode>(42)), "code_42");
  EXPECT_EQ(status_code_constant(StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(status_code_constant(StatusCode::DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
}

}  // namespace
}  // namespace statetune::common
