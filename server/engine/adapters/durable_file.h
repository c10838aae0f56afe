// Crash-safe file replacement for the adapter store: after a crash a reader sees either the old or
// the new content of a file, never a torn one.
#pragma once

#include <filesystem>
#include <string>

namespace statetune::engine {

// Writes `bytes` to `path` (created or truncated) and fsyncs it. Throws std::runtime_error with errno.
void write_file_synced(const std::filesystem::path& path, const std::string& bytes);

// fsyncs a folder so that renames and creations inside it survive a crash.
void fsync_directory(const std::filesystem::path& dir);

// rename(from, to) followed by an fsync of to's folder. Both must be on one file system.
void rename_durably(const std::filesystem::path& from, const std::filesystem::path& to);

// write_file_synced to "<path>.tmp", then rename_durably onto `path`.
void replace_file_atomically(const std::filesystem::path& path, const std::string& bytes);

std::string read_file(const std::filesystem::path& path);  // throws std::runtime_error

}  // namespace statetune::engine
