// Capturing one decode step as a CUDA graph and replaying it. A decode step of a small Mamba is ~15
// short kernels per layer; launched one by one from the host, the launches, not the GPU, bound the
// step at small batch sizes. A graph replays the whole step with one launch. What is captured
// must read and write only device memory whose addresses stay fixed (BucketedDecoder keeps them so)
// and must not synchronise with the host.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace statetune::engine {

class CapturedStep {
 public:
  virtual ~CapturedStep() = default;
  // Launches the captured work on the current stream of the device it was captured on.
  virtual void replay() = 0;
};

// Whether this build can capture CUDA graphs (a LibTorch with CUDA and a CUDA device present).
bool cuda_graphs_available();

// Runs `step` twice on a side stream to warm it up (cuBLAS handles and workspaces, the caching
// allocator's blocks), then captures it once into a graph on `device`. Throws std::runtime_error
// when the build has no CUDA graphs or the capture fails (e.g. `step` synchronised).
std::unique_ptr<CapturedStep> capture_step(const std::function<void()>& step, at::Device device);

}  // namespace statetune::engine
