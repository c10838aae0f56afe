#include "server/engine/util/durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace statetune::engine {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& step, const fs::path& file, int err) {
  throw StorageError(step + " " + file.string() + ": " + std::strerror(err), is_storage_full_errno(err));
}

fs::path folder_of(const fs::path& path) { return path.has_parent_path() ? path.parent_path() : fs::path("."); }

// Closes the descriptor and removes the temporary file unless disarmed: every way out of a failed
// write, exceptions from `fill` included, leaves nothing behind.
class TemporaryFile {
 public:
  explicit TemporaryFile(fs::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create", path_, errno);
  }
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!kept_) ::unlink(path_.c_str());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  int fd() const { return fd_; }
  const fs::path& path() const { return path_; }
  void sync_and_close() {
    if (::fsync(fd_) != 0) fail("cannot sync", path_, errno);
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail("cannot close", path_, errno);
  }
  void renamed() { kept_ = true; }

 private:
  fs::path path_;
  int fd_ = -1;
  bool kept_ = false;
};

}  // namespace

void FileSink::write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux writes at most ~2 GiB per call.
    const ssize_t n = ::write(fd_, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    // A write of 0 bytes on a regular file means no room is left.
    if (n <= 0) fail("cannot write", path_, n < 0 ? errno : ENOSPC);
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void write_file_durably(const fs::path& path, const std::function<void(FileSink&)>& fill) {
  TemporaryFile tmp(path.string() + ".tmp");
  FileSink sink(tmp.fd(), tmp.path());
  fill(sink);
  tmp.sync_and_close();
  if (::rename(tmp.path().c_str(), path.c_str()) != 0) fail("cannot rename " + tmp.path().string() + " to", path, errno);
  tmp.renamed();
  fsync_directory(folder_of(path));
}

void write_file_durably(const fs::path& path, std::string_view bytes) {
  write_file_durably(path, [bytes](FileSink& out) { out.write(bytes); });
}

void create_folders(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create", dir, ec.value());
}

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open folder", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail("cannot fsync folder", dir, err);
}

int remove_temporary_files(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return 0;
  int removed = 0;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".tmp" && it->is_regular_file(ec)) {
      std::error_code rm;
      if (fs::remove(it->path(), rm)) ++removed;
    }
  }
  return removed;
}

std::string read_file(const fs::path& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string() + ": " + std::strerror(errno));
  std::string out;
  try {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw std::runtime_error("cannot read the size of " + path.string() + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) throw std::runtime_error("cannot read " + path.string() + ": it is a folder");
    const auto too_big = [&](uintmax_t size) {
      return std::runtime_error(path.string() + " is " + std::to_string(size) + " bytes, more than the " +
                                std::to_string(max_bytes) + " it may have");
    };
    if (static_cast<uintmax_t>(st.st_size) > max_bytes) throw too_big(static_cast<uintmax_t>(st.st_size));
    out.reserve(static_cast<size_t>(st.st_size));
    // Read to the end rather than st_size bytes: the file may grow meanwhile (or be a pipe), and the
    // bound holds all the same.
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
      if (n == 0) break;
      if (out.size() + static_cast<size_t>(n) > max_bytes) throw too_big(out.size() + static_cast<size_t>(n));
      out.append(buf, static_cast<size_t>(n));
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return out;
}

}  // namespace statetune::engine
