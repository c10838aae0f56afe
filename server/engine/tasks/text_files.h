// Small text helpers shared by the readers and metrics: whole-file reads with errors that name the file,
// line splitting, and whitespace handling that matches Python's str.split()/str.strip().
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace statetune::tasks {

// The whole file; throws std::runtime_error naming the path when it cannot be read.
std::string read_text_file(const std::string& path);

// Lines without their "\n" / "\r\n" terminators; a final empty line (after the last "\n") is dropped.
std::vector<std::string> split_lines(std::string_view text);

// Fields separated by tab, no quoting (GLUE's tsv files are read with csv.QUOTE_NONE).
std::vector<std::string> split_tabs(std::string_view line);

// Python's str.split() without arguments: runs of ASCII whitespace, \x1c-\x1f and the UTF-8 encoded
// Unicode spaces (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
std::vector<std::string> split_whitespace(std::string_view text);

// Leading and trailing ASCII whitespace removed.
std::string trim_ascii(std::string_view text);

// Runs of ASCII whitespace replaced by one space, ends trimmed.
std::string collapse_whitespace(std::string_view text);

// "\r\n" and lone "\r" turned into "\n".
std::string normalize_newlines(std::string_view text);

}  // namespace statetune::tasks
