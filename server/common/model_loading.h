// The frozen base model and its tokenizer, loaded the same way by both services from the common
// options (--model, --tokenizer, --device, --dtype).
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>

#include "server/common/service_options.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/text/tokenizer.h"

namespace statetune::common {

struct LoadedModel {
  std::filesystem::path model_dir;  // --model, or the shipped default model
  at::Device device = at::kCPU;
  std::unique_ptr<engine::MambaModel> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;
};

// Throws std::runtime_error naming what failed (a bad --dtype or --device, an unreadable model or
// tokenizer).
LoadedModel load_model(const ServiceOptions& o);

}  // namespace statetune::common
