#include "server/common/model_loading.h"

#include <stdexcept>

#include "server/engine/model/default_model.h"

namespace statetune::common {

LoadedModel load_model(const ServiceOptions& o) {
  LoadedModel out;
  engine::LoadOptions lo;
  lo.device = at::Device(o.device);
  if (o.dtype == "bf16") {
    lo.dtype = at::kBFloat16;
  } else if (o.dtype != "f32") {
    throw std::runtime_error("--dtype must be f32 or bf16, got '" + o.dtype + "'");
  }
  out.device = lo.device;
  out.model_dir = engine::model_dir_or_default(o.model_dir);
  out.model = engine::MambaModel::load(out.model_dir, lo);
  const auto tok = o.tokenizer_path.empty() ? out.model_dir / "tokenizer.json" : o.tokenizer_path;
  out.tokenizer = std::make_unique<engine::Tokenizer>(engine::Tokenizer::from_file(tok.string()));
  return out;
}

}  // namespace statetune::common
