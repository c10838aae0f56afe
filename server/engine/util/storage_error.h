// A write to the service's own storage (an adapter or data set file, an index, the job database)
// failed. `full` says the device or the process's file-size limit ran out (ENOSPC, EDQUOT, EFBIG,
// SQLITE_FULL): the caller can answer RESOURCE_EXHAUSTED instead of INTERNAL. what() may name server
// paths: it is for the log, never for a tenant.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace statetune::engine {

class StorageError : public std::runtime_error {
 public:
  StorageError(const std::string& what, bool full) : std::runtime_error(what), full_(full) {}
  bool full() const { return full_; }

 private:
  bool full_;
};

inline bool is_storage_full_errno(int e) { return e == ENOSPC || e == EDQUOT || e == EFBIG; }

}  // namespace statetune::engine
