// A CPU emulation of the small part of the CUDA execution model the statetune kernels use, so the
// kernel source itself (kernels/cuda/*.cu, with its <<<>>> launches rewritten by CMake into
// emu::launch calls) runs and is checked on machines without a GPU. Force-included (-include) in
// every translation unit of kernels_cuda_emulated_test, before anything else.
//
// Semantics: blocks run one after another; the threads of a block run as fibers on one OS thread
// (see "Fibers" below), so __syncthreads and the warp shuffles (__shfl_sync, __shfl_up_sync,
// __shfl_down_sync, __shfl_xor_sync) work in every kernel. Device memory is host memory:
// cudaMalloc is malloc, cudaMemcpy is memcpy.
// The multiprocessor count is a small number so that the launchers' block-size choice varies
// with the shape.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

namespace emu {

inline uint3 thread_idx;
inline uint3 block_idx;
inline dim3 block_dim;
inline dim3 grid_dim;

constexpr unsigned kWarpSize = 32;

// A broken use of the execution model (a shuffle some lane of its mask never reaches, a barrier
// outside a launch): what the GPU would hang on or answer with an undefined value stops the test
// here, with the reason, instead of passing by luck.
[[noreturn]] inline void fail(const char* fmt, ...) {
  std::va_list args;
  va_start(args, fmt);
  std::fputs("emu: ", stderr);
  std::vfprintf(stderr, fmt, args);
  std::fputs("\n", stderr);
  va_end(args);
  std::abort();
}

// Fibers: each runs until its next __syncthreads or shuffle or its end, then the next one runs. A
// kernel's step between two such points touches no memory another thread of the block is allowed
// to race on, so running the threads one after another in between is one legal interleaving.
// The switch is hand-written on x86-64: ucontext's swapcontext makes a system call (the signal
// mask) per switch, ~1 us here, and the scan backward's shuffles switch ~500 million times in the
// large-shape test. Elsewhere ucontext does it, slowly but correctly.
#if defined(__x86_64__)
struct Context {
  void* sp = nullptr;  // the saved stack pointer; the registers lie on that stack
};
// Saves the callee-saved registers (and MXCSR / the x87 control word, callee-saved as well) on the
// current stack, stores the stack pointer in *from, and resumes the context whose stack pointer is
// `to` (returning from its own call of switch_stack, or entering fiber_start).
__attribute__((naked, noinline)) inline void switch_stack(void** /*from*/, void* /*to*/) {
  __asm__(
      "pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
      "subq $8, %rsp\n\tstmxcsr (%rsp)\n\tfnstcw 4(%rsp)\n\t"
      "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
      "ldmxcsr (%rsp)\n\tfldcw 4(%rsp)\n\taddq $8, %rsp\n\t"
      "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret\n\t");
}
inline void switch_context(Context& from, Context& to) { switch_stack(&from.sp, to.sp); }
// A context that enters `entry` (which never returns) on `stack`: the frame switch_stack pops.
inline void make_context(Context& c, std::vector<char>& stack, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack.data() + stack.size()) & ~uintptr_t{15};
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;  // entry's return address slot: the stack pointer is 8 mod 16 at entry, as after call
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int r = 0; r < 6; ++r) *--sp = 0;  // rbp rbx r12 r13 r14 r15
  uint32_t mxcsr = 0;
  uint16_t fpu_cw = 0;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(fpu_cw));
  *--sp = mxcsr | (uint64_t{fpu_cw} << 32);
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, std::vector<char>& stack, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack.data();
  c.uc.uc_stack.ss_size = stack.size();
  c.uc.uc_link = nullptr;  // entry never returns
  makecontext(&c.uc, entry, 0);
}
#endif

enum class Wait { kNone, kBarrier, kShuffle };
enum class ShuffleMode { kIdx, kUp, kDown, kXor };

// One lane's call of a shuffle: what it asked for and what it gets back.
struct Shuffle {
  ShuffleMode mode = ShuffleMode::kIdx;
  unsigned mask = 0;
  unsigned operand = 0;  // srcLane, delta or laneMask
  int width = 0;
  size_t size = 0;  // sizeof the exchanged type
  uint64_t value = 0, result = 0;
};

struct Fiber {
  Context ctx;
  std::vector<char> stack;
  bool done = false;
  Wait wait = Wait::kNone;
  Shuffle shuffle;
};
struct FiberState {
  Context scheduler;
  std::vector<Fiber> fibers;
  unsigned current = 0;
  unsigned n_threads = 0;
  bool in_fiber = false;
  std::function<void()> body;
};
inline FiberState& fiber_state() {
  static FiberState s;
  return s;
}
[[noreturn]] inline void fiber_start() {
  FiberState& s = fiber_state();
  s.body();
  Fiber& f = s.fibers[s.current];
  f.done = true;
  switch_context(f.ctx, s.scheduler);
  fail("a finished thread was resumed");
}
// Back to the scheduler until it lets this thread go on.
inline void wait_for(Wait why) {
  FiberState& s = fiber_state();
  Fiber& f = s.fibers[s.current];
  f.wait = why;
  switch_context(f.ctx, s.scheduler);
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
  if (!fiber_state().in_fiber) fail("__syncthreads outside a kernel launch");
  wait_for(Wait::kBarrier);
}

// The warp shuffles, with the semantics of PTX shfl.sync (what the __shfl_*_sync intrinsics
// compile to, `width` giving the segment): a lane whose source falls outside its segment (up,
// down, xor) gets its own value back. Every lane named in `mask` must reach the same shuffle with
// the same mask and width (on the GPU: a hang or undefined behaviour); a lane that reads a lane
// outside the mask would get an undefined value. The emulator fails on all of these
// (resolve_shuffles).
template <typename T>
T shuffle(ShuffleMode mode, unsigned mask, T var, unsigned operand, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t),
                "the shuffles exchange 4- or 8-byte values");
  FiberState& s = fiber_state();
  if (!s.in_fiber) fail("a warp shuffle outside a kernel launch");
  Shuffle& sh = s.fibers[s.current].shuffle;
  sh = Shuffle{mode, mask, operand, width, sizeof(T), 0, 0};
  std::memcpy(&sh.value, &var, sizeof(T));
  wait_for(Wait::kShuffle);
  T out;
  std::memcpy(&out, &sh.result, sizeof(T));
  return out;
}
template <typename T>
T shfl_sync(unsigned mask, T var, int src_lane, int width = kWarpSize) {
  return shuffle(ShuffleMode::kIdx, mask, var, static_cast<unsigned>(src_lane), width);
}
template <typename T>
T shfl_up_sync(unsigned mask, T var, unsigned delta, int width = kWarpSize) {
  return shuffle(ShuffleMode::kUp, mask, var, delta, width);
}
template <typename T>
T shfl_down_sync(unsigned mask, T var, unsigned delta, int width = kWarpSize) {
  return shuffle(ShuffleMode::kDown, mask, var, delta, width);
}
template <typename T>
T shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = kWarpSize) {
  return shuffle(ShuffleMode::kXor, mask, var, static_cast<unsigned>(lane_mask), width);
}

// The lane `lane` reads in a shuffle (PTX shfl.sync: b = operand, c = ((32 - width) << 8) | clamp).
inline unsigned shuffle_source(const Shuffle& sh, unsigned lane) {
  const unsigned seg = (kWarpSize - sh.width) & 31u;  // the lane bits that select the segment
  const unsigned b = sh.operand & 31u;
  const unsigned first = lane & seg;
  const unsigned last = first | (31u & ~seg);
  switch (sh.mode) {
    case ShuffleMode::kUp:
      return lane >= first + b ? lane - b : lane;
    case ShuffleMode::kDown:
      return lane + b <= last ? lane + b : lane;
    case ShuffleMode::kXor:
      return (lane ^ b) <= last ? lane ^ b : lane;
    case ShuffleMode::kIdx:
      break;
  }
  return first | (b & ~seg);
}

// After a round (every live thread waits at a barrier or a shuffle): completes the shuffles of
// every warp, or fails if one cannot complete. Returns whether any thread waited at a shuffle.
inline bool resolve_shuffles() {
  FiberState& s = fiber_state();
  bool any = false;
  for (unsigned base = 0; base < s.n_threads; base += kWarpSize) {
    const unsigned lanes = s.n_threads - base < kWarpSize ? s.n_threads - base : kWarpSize;
    for (unsigned lane = 0; lane < lanes; ++lane) {
      const Fiber& f = s.fibers[base + lane];
      if (f.done || f.wait != Wait::kShuffle) continue;
      any = true;
      const Shuffle& sh = f.shuffle;
      const unsigned warp = base / kWarpSize;
      const int w = sh.width;
      if (w < 1 || w > static_cast<int>(kWarpSize) || (w & (w - 1)) != 0)
        fail("warp %u lane %u: shuffle width %d is not a power of two in [1, 32]", warp, lane, w);
      if ((sh.mask >> lane & 1u) == 0)
        fail("warp %u lane %u: shuffle mask %#x does not name the calling lane", warp, lane,
             sh.mask);
      for (unsigned other = 0; other < kWarpSize; ++other) {
        if ((sh.mask >> other & 1u) == 0) continue;
        if (other >= lanes)
          fail("warp %u lane %u: shuffle mask %#x names lane %u, which the block does not have",
               warp, lane, sh.mask, other);
        const Fiber& o = s.fibers[base + other];
        if (o.done || o.wait != Wait::kShuffle)
          fail("warp %u lane %u: lane %u of the shuffle mask %#x did not arrive (%s)", warp, lane,
               other, sh.mask, o.done ? "it exited" : "it waits at __syncthreads");
        const Shuffle& osh = o.shuffle;
        if (osh.mode != sh.mode || osh.mask != sh.mask || osh.width != sh.width ||
            osh.size != sh.size)
          fail("warp %u: lanes %u and %u of mask %#x wait at different shuffles", warp, lane, other,
               sh.mask);
      }
      const unsigned src = shuffle_source(sh, lane);
      if ((sh.mask >> src & 1u) == 0)
        fail("warp %u lane %u reads lane %u, outside the shuffle mask %#x (an undefined value)",
             warp, lane, src, sh.mask);
    }
    // Every waiting lane's group is complete: exchange (values first, then results: a lane's
    // value must not be overwritten before all have read it; they are separate fields).
    for (unsigned lane = 0; lane < lanes; ++lane) {
      Fiber& f = s.fibers[base + lane];
      if (f.done || f.wait != Wait::kShuffle) continue;
      f.shuffle.result = s.fibers[base + shuffle_source(f.shuffle, lane)].shuffle.value;
    }
    for (unsigned lane = 0; lane < lanes; ++lane) {
      Fiber& f = s.fibers[base + lane];
      if (!f.done && f.wait == Wait::kShuffle) f.wait = Wait::kNone;
    }
  }
  return any;
}

inline uint3 thread_index(unsigned tid, dim3 block) {
  return uint3{tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y)};
}

// Runs one block: rounds in which every thread that may go on runs to its next barrier, shuffle or
// end; then the shuffles complete (they do not wait for the barrier), and when no thread waits at a
// shuffle any more, the barrier opens for every live thread. Threads that have exited drop out of
// barriers, as on sm_70+.
inline void run_block(unsigned n_threads, dim3 block) {
  FiberState& s = fiber_state();
  s.n_threads = n_threads;
  s.in_fiber = true;
  for (;;) {
    bool live = false;
    for (unsigned t = 0; t < n_threads; ++t) {
      Fiber& f = s.fibers[t];
      if (!f.done && f.wait == Wait::kNone) {
        s.current = t;
        thread_idx = thread_index(t, block);
        switch_context(s.scheduler, f.ctx);
      }
      live = live || !f.done;
    }
    if (!live) break;
    if (resolve_shuffles()) continue;
    for (unsigned t = 0; t < n_threads; ++t) s.fibers[t].wait = Wait::kNone;
  }
  s.in_fiber = false;
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
            const Args&... args) {
  const unsigned n_threads = block.x * block.y * block.z;
  if (n_threads == 0 || n_threads > 1024) fail("a block of %u threads", n_threads);
  grid_dim = grid;
  block_dim = block;
  FiberState& s = fiber_state();
  constexpr size_t kStack = 256 * 1024;
  s.body = [&] { kernel(args...); };
  if (s.fibers.size() < n_threads) s.fibers.resize(n_threads);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        block_idx = uint3{bx, by, bz};
        shared_buffer().assign(smem + 16, 0xCD);  // garbage-ish, as real shared memory would be
        for (unsigned t = 0; t < n_threads; ++t) {
          Fiber& f = s.fibers[t];
          f.stack.resize(kStack);
          f.done = false;
          f.wait = Wait::kNone;
          make_context(f.ctx, f.stack, fiber_start);
        }
        run_block(n_threads, block);
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
// Threads run one at a time (between their barriers and shuffles), so a plain add is atomic.
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
#define __shfl_sync ::emu::shfl_sync
#define __shfl_up_sync ::emu::shfl_up_sync
#define __shfl_down_sync ::emu::shfl_down_sync
#define __shfl_xor_sync ::emu::shfl_xor_sync
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
