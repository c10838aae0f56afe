// Crash-safe file replacement for the adapter store: after a crash a reader sees either the old or
// the new content of a file, never a torn one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace statetune::engine {

// Writes `bytes` to `path` (created or truncated) and fsyncs it. Throws std::runtime_error with errno.
void write_file_synced(const std::filesystem::path& path, const std::string& bytes);

// fsyncs a folder so that renames and creations inside it survive a crash.
void fsync_directory(const std::filesystem::path& dir);

// rename(from, to) followed by an fsync of to's folder. Both must be on one file system.
void rename_durably(const std::filesystem::path& from, const std::filesystem::path& to);

// write_file_synced to "<path>.tmp", then rename_durably onto `path`. On failure (a full disk, say)
// the temporary file is removed again, so nothing is left behind; `path` keeps its old content unless
// the rename itself happened and only the folder fsync failed.
void replace_file_atomically(const std::filesystem::path& path, const std::string& bytes);

// The whole file. Throws std::runtime_error when it cannot be read or is larger than `max_bytes`
// (checked before reading, so a huge file costs no memory).
std::string read_file(const std::filesystem::path& path, size_t max_bytes = SIZE_MAX);

}  // namespace statetune::engine
