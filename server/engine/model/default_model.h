// Where a binary finds the project's default base model (models/default, pretrained by
// scripts/pretrain/) when no model folder is given.
#pragma once

#include <filesystem>

namespace statetune::engine {

// The first of these folders that holds a config.json:
//   $STATETUNE_MODEL;
//   <directory of the running binary>/../share/statetune/models/default  (an installed tree, the image);
//   <directory of the running binary>/../models/default;
//   the source tree's models/default (a build tree).
// Throws std::runtime_error naming the places it looked at when none has one.
std::filesystem::path default_model_dir();

// `dir` itself when it is not empty, otherwise default_model_dir().
std::filesystem::path model_dir_or_default(const std::filesystem::path& dir);

}  // namespace statetune::engine
