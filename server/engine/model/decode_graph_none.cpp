// Builds whose LibTorch has no CUDA: there is nothing to capture (decode_graph_cuda.cpp is the real one).
#include <stdexcept>

#include "server/engine/model/decode_graph.h"

namespace statetune::engine {

bool cuda_graphs_available() { return false; }

std::unique_ptr<CapturedStep> capture_step(const std::function<void()>&, at::Device) {
  throw std::runtime_error("CUDA graphs need a build against a LibTorch with CUDA");
}

}  // namespace statetune::engine
