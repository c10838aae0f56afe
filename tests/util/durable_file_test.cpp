// The durable-file module every writer uses: whole files or nothing, after a failure of the writer,
// of the file system or of a full disk, and bounded whole-file reads.
#include "server/engine/util/durable_file.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace statetune::engine {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("statetune_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(DurableFile, WritesWholeFilesAndLeavesNothingWhenItFails) {
  const fs::path dir = fs::temp_directory_path() / ("statetune_durable_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  write_file_durably("relative.json", "{}");  // a name without a folder (--ready-file ready.json)
  fs::current_path(cwd);
  EXPECT_TRUE(fs::exists(dir / "relative.json"));
  create_folders(dir / "sub");
  write_file_durably(dir / "sub" / "a.jsonl", "x\n");
  EXPECT_EQ(fs::file_size(dir / "sub" / "a.jsonl"), 2u);
  // The target is a folder: the rename fails, and the temporary file goes with it.
  fs::create_directories(dir / "sub" / "taken" / "inside");
  EXPECT_THROW(write_file_durably(dir / "sub" / "taken", "y"), StorageError);
  EXPECT_FALSE(fs::exists(dir / "sub" / "taken.tmp"));

  std::ofstream(dir / "sub" / "left.jsonl.tmp") << "half";
  std::ofstream(dir / "left.json.tmp") << "half";
  EXPECT_EQ(remove_temporary_files(dir), 2);
  EXPECT_FALSE(fs::exists(dir / "sub" / "left.jsonl.tmp"));
  EXPECT_TRUE(fs::exists(dir / "sub" / "a.jsonl"));
  fs::remove_all(dir);
}

TEST(DurableFile, StreamsPiecesAndAFillThatThrowsLeavesTheOldFile) {
  const fs::path dir = fresh_dir("durable_fill");
  const fs::path file = dir / "data.bin";
  write_file_durably(file, [](FileSink& out) {
    out.write("ab");
    const char more[] = {'c', '\0', 'd'};
    out.write(more, sizeof(more));
  });
  EXPECT_EQ(slurp(file), std::string("abc\0d", 5));
  EXPECT_THROW(write_file_durably(file,
                                  [](FileSink& out) {
                                    out.write("half of it");
                                    throw std::invalid_argument("the caller gave up");
                                  }),
               std::invalid_argument);
  EXPECT_EQ(slurp(file), std::string("abc\0d", 5));
  EXPECT_FALSE(fs::exists(dir / "data.bin.tmp"));
  // A folder that does not exist is an error, not created behind the caller's back.
  EXPECT_THROW(write_file_durably(dir / "missing" / "x", "y"), StorageError);
  EXPECT_FALSE(fs::exists(dir / "missing"));
  fs::remove_all(dir);
}

// A real file-size limit (RLIMIT_FSIZE, as a full disk): the write fails with a StorageError that says
// "full", the old content stays and no temporary file is left.
TEST(DurableFile, AFullDiskIsReportedAsFullAndChangesNothing) {
  const fs::path dir = fresh_dir("durable_full");
  const fs::path file = dir / "index.json";
  write_file_durably(file, "old");
  auto* previous = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of being killed
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit limited = saved;
  limited.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  bool full = false;
  try {
    write_file_durably(file, std::string(64 * 1024, 'n'));
  } catch (const StorageError& e) {
    full = e.full();
  }
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  std::signal(SIGXFSZ, previous);
  EXPECT_TRUE(full) << "the write past the limit did not fail as 'full'";
  EXPECT_EQ(slurp(file), "old");
  EXPECT_FALSE(fs::exists(dir / "index.json.tmp"));
  fs::remove_all(dir);
}

TEST(ReadFile, ReadsWholeFilesWithinTheBoundOnly) {
  const fs::path dir = fresh_dir("read_file");
  const std::string bytes(100000, 'x');
  write_file_durably(dir / "f", bytes);
  EXPECT_EQ(read_file(dir / "f"), bytes);
  EXPECT_EQ(read_file(dir / "f", bytes.size()), bytes);
  try {
    read_file(dir / "f", bytes.size() - 1);
    ADD_FAILURE() << "a file over the bound was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("100000 bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_file(dir / "absent"), std::runtime_error);
  EXPECT_THROW(read_file(dir), std::runtime_error);  // a folder
  write_file_durably(dir / "empty", "");
  EXPECT_EQ(read_file(dir / "empty", 0), "");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace statetune::engine
