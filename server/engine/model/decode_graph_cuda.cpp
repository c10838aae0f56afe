// CUDA graphs through LibTorch's at::cuda::CUDAGraph, which routes the allocations made during the
// capture to a private pool of the caching allocator, so the addresses the graph baked in stay
// reserved for it as long as it lives.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>

#include <stdexcept>
#include <string>

#include "server/engine/model/decode_graph.h"

namespace statetune::engine {
namespace {

class CudaCapturedStep final : public CapturedStep {
 public:
  explicit CudaCapturedStep(at::Device device) : device_(device) {}
  void replay() override {
    c10::cuda::CUDAGuard guard(device_);
    graph_.replay();
  }
  at::cuda::CUDAGraph& graph() { return graph_; }

 private:
  at::Device device_;
  at::cuda::CUDAGraph graph_;
};

}  // namespace

bool cuda_graphs_available() { return c10::cuda::device_count() > 0; }

std::unique_ptr<CapturedStep> capture_step(const std::function<void()>& step, at::Device device) {
  if (!device.is_cuda()) throw std::runtime_error("CUDA graphs need a CUDA device, not " + device.str());
  c10::cuda::CUDAGuard guard(device);
  auto captured = std::make_unique<CudaCapturedStep>(device);
  // Capture may not run on the legacy default stream; the work before and after it is ordered
  // with the caller's stream by synchronising the device around the capture (once per bucket).
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  c10::cuda::device_synchronize();
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    step();
    step();
    side.synchronize();
    try {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
      // Only this thread's unsafe calls (a cudaMalloc, a sync) break the capture: gRPC and HTTP
      // threads keep running while a bucket is captured on the engine thread.
      captured->graph().capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
#else
      captured->graph().capture_begin();
#endif
      try {
        step();
      } catch (...) {
        // End the stream's capture mode, or every later launch on this pool stream would fail.
        try {
          captured->graph().capture_end();
        } catch (...) {
        }
        throw;
      }
      captured->graph().capture_end();
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("capturing the decode step as a CUDA graph failed: ") + e.what());
    }
  }
  c10::cuda::device_synchronize();
  return captured;
}

}  // namespace statetune::engine
