// A job's parameters as the job store hands them back (JSON text), through the bounded parser and the
// hyper-parameter checks every job runs before it trains.
#include <string_view>

#include "server/engine/util/bounded_json.h"
#include "server/training/job_params.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto spec = statetune::engine::parse_bounded_json(text, {}, "job parameters");
    const auto p = statetune::training::parse_job_params(spec);
    // What it accepts is inside the documented ranges.
    FUZZ_CHECK(!p.methods.empty());
    FUZZ_CHECK(p.learning_rate >= 0 && p.learning_rate <= 1);
    FUZZ_CHECK(p.epochs >= 1 && p.epochs <= 1000 && p.batch_size >= 1 && p.batch_size <= 256);
    FUZZ_CHECK(p.max_length >= 8 && p.max_length <= 8192);
    FUZZ_CHECK(p.validation_split >= 0 && p.validation_split <= 0.5);
  } catch (const std::exception&) {
  }
  return 0;
}
