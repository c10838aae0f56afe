// Writing a file so that it is whole or absent after a crash or a failed write, and removing what
// an interrupted write left behind.
#pragma once

#include <filesystem>
#include <string>

namespace statetune::training {

// Writes `bytes` to `path` through `<path>.tmp` + fsync + rename + fsync of the folder. On any
// failure the temporary file is removed and StorageError (errno-classified) is thrown: the folder
// is as it was.
void write_durably(const std::filesystem::path& path, const std::string& bytes);

// Removes every `*.tmp` under `root` (recursively): the leftovers of writes a crash interrupted.
// Returns how many were removed; a file that cannot be removed is skipped.
int remove_temporary_files(const std::filesystem::path& root);

}  // namespace statetune::training
