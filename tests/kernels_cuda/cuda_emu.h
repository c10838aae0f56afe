// A CPU emulation of the small part of the CUDA execution model the statetune kernels use, so the
// kernel source itself (kernels/cuda/*.cu, with its <<<>>> launches rewritten by CMake into
// emu::launch calls) runs and is checked on machines without a GPU. Force-included (-include) in
// every translation unit of kernels_cuda_emulated_test, before anything else.
//
// Semantics: blocks run one after another; the threads of a block run as fibers when the kernel
// uses dynamic shared memory (the only kernels that call __syncthreads), else one after another. Device memory is host memory: cudaMalloc is malloc, cudaMemcpy is memcpy.
// The multiprocessor count is a small number so that the launchers' block-size choice varies
// with the shape.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>

#include <ucontext.h>

#include <functional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace emu {

inline uint3 thread_idx;
inline uint3 block_idx;
inline dim3 block_dim;
inline dim3 grid_dim;

// The threads of a block that synchronises are fibers (ucontext) on one OS thread: each runs until
// its next __syncthreads or its end, then the next one runs; a round ends when every live thread
// waits at the barrier, which is exactly what __syncthreads guarantees. Threads that have exited
// drop out, as on sm_70+.
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
};
struct FiberState {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  unsigned current = 0;
  bool in_fiber = false;
  std::function<void(unsigned)> body;
};
inline FiberState& fiber_state() {
  static FiberState s;
  return s;
}
inline void fiber_entry() {
  FiberState& s = fiber_state();
  s.body(s.current);
  s.fibers[s.current].done = true;  // returning resumes uc_link, the scheduler
}

inline std::vector<unsigned char>& shared_buffer() {
  static std::vector<unsigned char> buf;
  return buf;
}
template <typename T>
T* shared_mem() {
  return reinterpret_cast<T*>(shared_buffer().data());
}

inline void syncthreads() {
  FiberState& s = fiber_state();
  if (!s.in_fiber) {
    std::fprintf(stderr, "emu: __syncthreads in a kernel launched without shared memory\n");
    std::abort();
  }
  swapcontext(&s.fibers[s.current].ctx, &s.scheduler);
}

inline uint3 thread_index(unsigned tid, dim3 block) {
  return uint3{tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y)};
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
            const Args&... args) {
  const unsigned n_threads = block.x * block.y * block.z;
  if (n_threads == 0 || n_threads > 1024) std::abort();
  grid_dim = grid;
  block_dim = block;
  FiberState& s = fiber_state();
  constexpr size_t kStack = 256 * 1024;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        block_idx = uint3{bx, by, bz};
        shared_buffer().assign(smem + 16, 0xCD);  // garbage-ish, as real shared memory would be
        if (smem == 0) {  // no __syncthreads possible: threads one after another
          for (unsigned t = 0; t < n_threads; ++t) {
            thread_idx = thread_index(t, block);
            kernel(args...);
          }
          continue;
        }
        s.body = [&](unsigned) { kernel(args...); };
        if (s.fibers.size() < n_threads) s.fibers.resize(n_threads);
        for (unsigned t = 0; t < n_threads; ++t) {
          Fiber& f = s.fibers[t];
          f.stack.resize(kStack);
          f.done = false;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack.data();
          f.ctx.uc_stack.ss_size = f.stack.size();
          f.ctx.uc_link = &s.scheduler;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        s.in_fiber = true;
        for (bool live = true; live;) {
          live = false;
          for (unsigned t = 0; t < n_threads; ++t) {
            if (s.fibers[t].done) continue;
            s.current = t;
            thread_idx = thread_index(t, block);
            swapcontext(&s.scheduler, &s.fibers[t].ctx);
            live = live || !s.fibers[t].done;
          }
        }
        s.in_fiber = false;
      }
}

inline cudaError_t get_last_error() { return cudaSuccess; }
inline cudaError_t get_device(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t device_get_attribute(int* v, cudaDeviceAttr attr, int) {
  *v = attr == cudaDevAttrMultiProcessorCount ? 4 : 0;
  return cudaSuccess;
}
inline cudaError_t get_device_count(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t malloc_(void** p, size_t bytes) {
  *p = std::malloc(bytes);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t free_(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t memcpy_(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t memset_async(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
// Threads run one at a time, so a plain add is atomic.
inline float atomic_add(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline cudaError_t synchronize() { return cudaSuccess; }
inline const char* error_string(cudaError_t e) {
  return e == cudaSuccess ? "no error (emulated)" : "error (emulated)";
}

}  // namespace emu

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__
#define __launch_bounds__(...)
#define threadIdx ::emu::thread_idx
#define blockIdx ::emu::block_idx
#define blockDim ::emu::block_dim
#define gridDim ::emu::grid_dim
#define __syncthreads ::emu::syncthreads
#define cudaGetLastError ::emu::get_last_error
#define cudaPeekAtLastError ::emu::get_last_error
#define cudaGetDevice ::emu::get_device
#define cudaDeviceGetAttribute ::emu::device_get_attribute
#define cudaGetDeviceCount ::emu::get_device_count
#define cudaMalloc(p, n) ::emu::malloc_(reinterpret_cast<void**>(p), n)
#define cudaFree ::emu::free_
#define cudaMemcpy ::emu::memcpy_
#define cudaMemsetAsync ::emu::memset_async
#define atomicAdd ::emu::atomic_add
#define cudaDeviceSynchronize ::emu::synchronize
#define cudaGetErrorString ::emu::error_string
