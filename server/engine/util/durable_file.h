// The one way statetune writes and reads whole files. A write is crash-safe: after a crash, a full
// disk or any other failure a reader sees either the old or the new content of a file, never a torn
// one, and no temporary file is left behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "server/engine/util/storage_error.h"

namespace statetune::engine {

// Where write_file_durably's `fill` puts the bytes (the temporary file). Write errors throw
// StorageError; EINTR and short writes are retried.
class FileSink {
 public:
  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

 private:
  friend void write_file_durably(const std::filesystem::path&, const std::function<void(FileSink&)>&);
  FileSink(int fd, const std::filesystem::path& path) : fd_(fd), path_(path) {}
  int fd_;
  const std::filesystem::path& path_;
};

// Writes `<path>.tmp` (in a folder that must exist) with what `fill` writes to the sink, fsyncs it,
// renames it onto `path` and fsyncs the folder. On any failure -- `fill` throwing included -- the
// temporary file is removed and the exception propagates; failures of the file system throw
// StorageError (full() for ENOSPC, EDQUOT, EFBIG). `path` keeps its old content unless the rename
// itself happened and only the folder fsync failed.
void write_file_durably(const std::filesystem::path& path, const std::function<void(FileSink&)>& fill);
void write_file_durably(const std::filesystem::path& path, std::string_view bytes);

// fs::create_directories, throwing StorageError (full() when the disk is).
void create_folders(const std::filesystem::path& dir);

// fsyncs a folder so that renames and creations inside it survive a crash. Throws StorageError.
void fsync_directory(const std::filesystem::path& dir);

// Removes every `*.tmp` under `root` (recursively): the leftovers of writes a crash interrupted.
// Returns how many were removed; a file that cannot be removed is skipped.
int remove_temporary_files(const std::filesystem::path& root);

// The whole file. Throws std::runtime_error naming the file when it cannot be read or is larger than
// `max_bytes` (checked before reading, so a huge file costs no memory).
std::string read_file(const std::filesystem::path& path, size_t max_bytes = SIZE_MAX);

}  // namespace statetune::engine
