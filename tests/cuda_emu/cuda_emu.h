// cuda_emu.h -- run CUDA kernel source on the CPU, as ordinary C++ (g++ -std=c++17).
//
// Why: our machines (and CI) have nvcc but no GPU. nvcc proves the kernels compile; this header proves
// they compute the right thing, by compiling the SAME .cu source with g++ and running every CUDA
// thread of a block on the host. Include it instead of the CUDA headers (csrc/cuda/common.cuh does
// that when MINISORA_EMU is defined).
//
// Execution model.
//  * Every CUDA thread of a block is a fiber (ucontext: its own stack and registers). The fibers of a
//    block run on one OS thread, cooperatively: a fiber runs until it reaches a barrier -- __syncthreads,
//    or a warp collective (shuffle, mma, ldmatrix, __syncwarp) -- and then the scheduler picks the next
//    runnable fiber. Fibers instead of one std::thread per CUDA thread make a block's interleaving a
//    deterministic function of the chosen *schedule*, and a switch is one swapcontext (~0.5 us)
//    instead of a futex round trip between OS threads (a test block does thousands of collectives).
//  * Schedules: FORWARD (lowest runnable thread first), REVERSE (highest first) and RANDOM (seeded).
//    Between two barriers a fiber runs to completion before the next one starts, so a missing
//    __syncthreads lets one thread run ahead through a shared-memory hazard: forward order exposes
//    reads-before-writes of higher threads, reverse order those of lower threads. Running a kernel
//    under several schedules and comparing with a reference is this emulator's race detector.
//  * Blocks run one after another on each of `workers` OS threads (blocks share nothing but global
//    memory, so they may run in parallel: atomicAdd is a real atomic).
//  * `__shared__` is `static thread_local`: one copy per OS thread, i.e. per running block, since all
//    fibers of a block share their OS thread, so a block may see a previous block's leftovers there.
//    Dynamic shared memory (MINISORA_DYNAMIC_SMEM in common.cuh) is a per-OS-thread buffer poisoned
//    with NaN bytes before every block: reading what the block did not write shows as NaN.
//  * Warp collectives exchange values through a per-warp buffer (two alternating slots, so one barrier
//    per collective suffices) and check that all 32 lanes executed the same collective: a divergent
//    shuffle is reported, as is a __syncthreads that some thread skipped (deadlock).
//  * Tensor-core instructions follow the PTX ISA fragment layouts (groupID = lane / 4, threadID_in_group
//    = lane % 4): mma.sync m16n8k8 (f16) and m16n8k16 (f16, bf16) with f32 accumulators, ldmatrix
//    x1/x2/x4 with and without .trans (16-byte row alignment checked), and cp.async with its commit
//    groups, each copy landing only when a wait_group retires it (so a missing wait shows).
//  * Errors (deadlock, misaligned ldmatrix/cp.async, a cp.async outside the declared global ranges,
//    __trap) abandon the launch; cudaGetLastError()
//    then returns cudaErrorLaunchFailure and cuda_emu::last_error_message() says why. Nothing aborts.
// Knobs (cuda_emu::config()): emulated compute capability (arch, default 80), schedule, seed, workers.
//
// What it cannot see: every collective is a full warp barrier here, memory included, so a missing
// __syncwarp between shared stores and another lane's loads goes unnoticed when a shuffle sits in
// between (on a GPU a shuffle does not order memory). Fiber switches happen only at barriers and
// collectives, so hazards inside one barrier interval are exposed only through the schedule order.
// Floating-point sums follow program order (a GPU may contract to FMA and tensor cores round
// differently), so compare with a tolerance. Speed: a warp collective is ~32 fiber switches, about
// 10 us, so one 64x64 tensor-core tile step of a block takes milliseconds: test on small shapes.
//
// Build: g++ -std=c++17 -x c++ -DMINISORA_EMU -fno-strict-aliasing -pthread (the kernels type-pun
// shared memory through reinterpret_cast, as CUDA code does; nvcc allows it, g++ needs the flag).
#pragma once
#include <ucontext.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

// ---- CUDA keywords ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __shared__ static thread_local
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;  // set per fiber / per block

struct alignas(16) uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

// ---- the slice of the CUDA runtime API the launchers use -----------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 719,
};
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
typedef struct CUstream_st* cudaStream_t;

// ---- fp16 / bf16 storage types with round-to-nearest-even conversions -----------------------------
struct __half { uint16_t __x; };
struct __nv_bfloat16 { uint16_t __x; };

namespace cuda_emu {
inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
}  // namespace cuda_emu

inline __half __float2half_rn(float f) {
  const uint32_t u = cuda_emu::float_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  uint32_t h;
  if (a > 0x7f800000u) h = 0x7e00u;                 // NaN stays NaN
  else if (a >= 0x477ff000u) h = 0x7c00u;           // >= 65520 rounds to infinity (65504 is the max)
  else if (a < 0x38800000u) h = (uint32_t)std::nearbyint(std::fabs(f) * 16777216.0f);  // subnormal: units of 2^-24
  else {
    h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);  // rebias exponent 127 -> 15, keep 10 mantissa bits
    const uint32_t rest = a & 0x1fffu;                        // the 13 dropped bits
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h; // ties to even; a carry bumps the exponent
  }
  return __half{(uint16_t)(sign | h)};
}
inline float __half2float(__half h) {
  const uint32_t sign = (uint32_t)(h.__x & 0x8000u) << 16, e = (h.__x >> 10) & 0x1fu, m = h.__x & 0x3ffu;
  if (e == 0) return (sign ? -1.0f : 1.0f) * (float)m * 5.9604644775390625e-8f;  // m * 2^-24
  if (e == 31) return cuda_emu::bits_float(sign | 0x7f800000u | (m << 13));
  return cuda_emu::bits_float(sign | ((e + 112u) << 23) | (m << 13));
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t u = cuda_emu::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40u)};  // quiet NaN
  return __nv_bfloat16{(uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};                  // ties to even
}
inline float __bfloat162float(__nv_bfloat16 b) { return cuda_emu::bits_float((uint32_t)b.__x << 16); }

namespace cuda_emu {

enum Schedule { FORWARD = 0, REVERSE = 1, RANDOM = 2 };
struct Config {
  int arch = 80;           // emulated compute capability x10 (75: Turing, 80: Ampere, 90: Hopper)
  int schedule = FORWARD;  // order in which runnable fibers are resumed
  uint64_t seed = 0;       // for RANDOM
  int workers = 1;         // OS threads running blocks in parallel
};
inline Config& config() { static Config c; return c; }

inline std::mutex& error_mutex() { static std::mutex m; return m; }
inline std::string& error_text() { static std::string s; return s; }
inline thread_local cudaError_t last_error = cudaSuccess;
inline std::string last_error_message() { std::lock_guard<std::mutex> g(error_mutex()); return error_text(); }

// ---- the block scheduler ------------------------------------------------------------------------
constexpr size_t kStackBytes = 256 * 1024;
constexpr int kSlotWords = 16;  // 64-bit words a lane may publish in one collective

struct AsyncCopy {
  void* dst;
  const void* src;
  int src_bytes;
  void run() const {
    std::memset(dst, 0, 16);
    std::memcpy(dst, src, src_bytes);
  }
};

struct Fiber {
  ucontext_t ctx;
  void* stack = nullptr;
  enum State { RUNNABLE, AT_WARP_BARRIER, AT_BLOCK_BARRIER, DONE } state = DONE;
  unsigned parity = 0;   // which of the warp's two exchange slots this lane's next collective uses
  uint64_t seq = 0;      // number of collectives this lane has executed (for divergence checks)
  std::vector<AsyncCopy> open_copies;             // cp.async issued since the last commit
  std::deque<std::vector<AsyncCopy>> copy_groups;  // committed, not yet waited for
};

struct Warp {
  int size = 0, arrived = 0;
  uint64_t slot[2][32][kSlotWords];
  uint64_t tag[2][32];  // (collective kind, sequence number) each lane published with its slot
};

struct BlockRunner {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t scheduler;
  int current = -1, block_arrived = 0;
  bool failed = false;
  std::string failure;
  const std::function<void()>* body = nullptr;
  std::mt19937_64 rng;

  explicit BlockRunner(int nthreads) : fibers(nthreads), warps((nthreads + 31) / 32) {
    for (auto& f : fibers) {
      // Each stack gets a PROT_NONE guard page below it, so an overflow faults instead of corrupting.
      char* p = (char*)mmap(nullptr, kStackBytes + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      mprotect(p, 4096, PROT_NONE);
      f.stack = p;
    }
    for (size_t w = 0; w < warps.size(); ++w) warps[w].size = std::min(32, nthreads - (int)w * 32);
  }
  ~BlockRunner() { for (auto& f : fibers) munmap(f.stack, kStackBytes + 4096); }
  BlockRunner(const BlockRunner&) = delete;
  BlockRunner& operator=(const BlockRunner&) = delete;

  static BlockRunner*& active() { static thread_local BlockRunner* r = nullptr; return r; }
  static void entry() {
    BlockRunner* r = active();
    (*r->body)();
    r->fibers[r->current].state = Fiber::DONE;  // returning resumes the scheduler loop through uc_link
  }

  void set_thread_index(int i) {
    threadIdx = dim3(i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y));
  }
  int pick() {
    const int n = (int)fibers.size();
    switch (config().schedule) {
      case REVERSE:
        for (int i = n - 1; i >= 0; --i) if (fibers[i].state == Fiber::RUNNABLE) return i;
        return -1;
      case RANDOM: {
        int count = 0;
        for (auto& f : fibers) count += f.state == Fiber::RUNNABLE;
        if (count == 0) return -1;
        int k = (int)(rng() % (uint64_t)count);
        for (int i = 0; i < n; ++i) if (fibers[i].state == Fiber::RUNNABLE && k-- == 0) return i;
        return -1;
      }
      default:
        for (int i = 0; i < n; ++i) if (fibers[i].state == Fiber::RUNNABLE) return i;
        return -1;
    }
  }
  // Runs one block to completion; returns false (with `failure` set) on a deadlock or a kernel error.
  bool run(const std::function<void()>& kernel_body, uint64_t block_seed) {
    body = &kernel_body;
    active() = this;
    failed = false;
    block_arrived = 0;
    rng.seed(config().seed * 0x9E3779B97F4A7C15ull + block_seed);
    for (auto& w : warps) w.arrived = 0;
    for (auto& f : fibers) {
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = (char*)f.stack + 4096;
      f.ctx.uc_stack.ss_size = kStackBytes;
      f.ctx.uc_link = &scheduler;
      makecontext(&f.ctx, &BlockRunner::entry, 0);
      f.state = Fiber::RUNNABLE;
      f.parity = 0;
      f.seq = 0;
      f.open_copies.clear();
      f.copy_groups.clear();
    }
    while (!failed) {
      const int i = pick();
      if (i < 0) {
        for (auto& f : fibers)
          if (f.state != Fiber::DONE) {
            fail_here("deadlock: a barrier (__syncthreads or a warp collective) was not reached by all "
                      "threads of its block/warp -- a thread exited or took another branch");
            break;
          }
        break;
      }
      current = i;
      set_thread_index(i);
      swapcontext(&scheduler, &fibers[i].ctx);
    }
    active() = nullptr;
    return !failed;
  }
  void fail_here(const std::string& why) {
    if (!failed) {
      failed = true;
      char where[96];
      std::snprintf(where, sizeof where, " [block (%u,%u,%u), thread %d]", blockIdx.x, blockIdx.y, blockIdx.z, current);
      failure = why + where;
    }
  }
  // Called from inside a fiber: abandon it and go back to the scheduler for good.
  [[noreturn]] void fail_from_fiber(const std::string& why) {
    fail_here(why);
    fibers[current].state = Fiber::DONE;
    setcontext(&scheduler);
    std::abort();  // unreachable: setcontext does not return
  }
  // Called by a fiber at a barrier (after updating its state): switch straight to the fiber the
  // schedule picks next -- possibly itself -- or, if none can run, back to the scheduler loop.
  void reschedule() {
    const int me = current, next = pick();
    if (next == me) return;
    if (next < 0) {
      swapcontext(&fibers[me].ctx, &scheduler);
      return;
    }
    current = next;
    set_thread_index(next);
    swapcontext(&fibers[me].ctx, &fibers[next].ctx);  // resumes here once someone switches back to `me`
  }

  void block_barrier() {
    Fiber& me = fibers[current];
    if (++block_arrived == (int)fibers.size()) {
      block_arrived = 0;
      for (auto& f : fibers) if (f.state == Fiber::AT_BLOCK_BARRIER) f.state = Fiber::RUNNABLE;
    } else {
      me.state = Fiber::AT_BLOCK_BARRIER;
    }
    reschedule();  // the schedule, not arrival order, decides who runs next
  }
  void warp_barrier() {
    const int w = current / 32;
    Warp& warp = warps[w];
    if (++warp.arrived == warp.size) {
      warp.arrived = 0;
      for (int l = 0; l < warp.size; ++l)
        if (fibers[w * 32 + l].state == Fiber::AT_WARP_BARRIER) fibers[w * 32 + l].state = Fiber::RUNNABLE;
    } else {
      fibers[current].state = Fiber::AT_WARP_BARRIER;
    }
    reschedule();
  }
  // A warp collective: publish `words` 64-bit words, wait for the whole warp, return the warp's slot
  // array (indexed [lane][word]); valid until this lane's next collective.
  const uint64_t (*collective(int kind, const uint64_t* mine, int words))[kSlotWords] {
    Fiber& me = fibers[current];
    Warp& warp = warps[current / 32];
    const int lane = current % 32;
    const unsigned s = me.parity;
    me.parity ^= 1u;
    std::memcpy(warp.slot[s][lane], mine, sizeof(uint64_t) * words);
    warp.tag[s][lane] = ((uint64_t)kind << 56) | me.seq++;
    warp_barrier();
    for (int l = 0; l < warp.size; ++l)
      if (warp.tag[s][l] != warp.tag[s][lane])
        fail_from_fiber("warp divergence: lanes of one warp executed different collectives (shuffle/mma/ldmatrix)");
    return warp.slot[s];
  }
};

inline BlockRunner& runner() {
  BlockRunner* r = BlockRunner::active();
  if (!r) { std::fprintf(stderr, "cuda_emu: device function called outside a kernel launch\n"); std::abort(); }
  return *r;
}
[[noreturn]] inline void fail(const std::string& why) { runner().fail_from_fiber(why); }
inline int lane_id() { return runner().current % 32; }

enum CollectiveKind { SHFL = 1, SYNCWARP, MMA_K8, MMA_K16, LDMATRIX };

// Dynamic shared memory (`extern __shared__`, MINISORA_DYNAMIC_SMEM): one buffer per OS thread, i.e.
// per running block, filled with 0xFF bytes before every block -- a NaN in fp32, fp16 and bf16 -- so
// a kernel that reads shared memory it did not write in this block (a previous block's leftovers on
// a GPU, or garbage) computes NaN and fails its test.
inline thread_local std::vector<unsigned char> dynamic_smem_buffer;
inline thread_local size_t dynamic_smem_bytes = 0;
inline unsigned char* dynamic_shared_memory() {
  return reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(dynamic_smem_buffer.data()) + 127) & ~uintptr_t(127));
}
inline void poison_dynamic_shared_memory() {
  if (dynamic_smem_bytes) std::memset(dynamic_shared_memory(), 0xFF, dynamic_smem_bytes);
}

// Runs `body` (the kernel call, arguments bound) over the grid; records the outcome in last_error.
inline void run_grid(dim3 grid, dim3 block, const std::function<void()>& body, size_t smem_bytes = 0) {
  const long nblocks = (long)grid.x * grid.y * grid.z;
  const int nthreads = (int)(block.x * block.y * block.z);
  if (nthreads < 1 || nthreads > 1024 || nblocks < 1) { last_error = cudaErrorInvalidValue; return; }
  std::atomic<long> next{0};
  std::atomic<bool> failed{false};
  auto work = [&] {
    BlockRunner r(nthreads);
    gridDim = grid;
    blockDim = block;
    dynamic_smem_buffer.assign(smem_bytes + 128, 0);
    dynamic_smem_bytes = smem_bytes;
    for (long b; !failed && (b = next++) < nblocks;) {
      blockIdx = dim3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((long)grid.x * grid.y)));
      poison_dynamic_shared_memory();
      if (!r.run(body, (uint64_t)b)) {
        std::lock_guard<std::mutex> g(error_mutex());
        if (!failed.exchange(true)) error_text() = r.failure;
      }
    }
  };
  const int w = (int)std::max(1L, std::min<long>(config().workers, nblocks));
  std::vector<std::thread> pool;
  for (int i = 1; i < w; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  last_error = failed ? cudaErrorLaunchFailure : cudaSuccess;
}

// kernel<<<grid, block, smem, stream>>>(args...) becomes launch(kernel, grid, block, smem, stream, args...).
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t, Args... args) {
  std::tuple<std::decay_t<Params>...> bound(args...);  // converted to the parameter types, as nvcc does
  if (smem_bytes > 227 * 1024) { last_error = cudaErrorInvalidValue; return; }  // the largest (sm_90) limit
  run_grid(grid, block, [&] { std::apply(kernel, bound); }, smem_bytes);
}

// ---- tensor cores -------------------------------------------------------------------------------
// Element e (0 = low half, 1 = high half) of 32-bit register `reg` of lane `lane`, as float.
template <class T>
inline float frag_elem(const uint64_t (*slots)[kSlotWords], int lane, int reg, int e) {
  const uint32_t word = (uint32_t)slots[lane][reg];
  T x;
  const uint16_t bits = (uint16_t)(word >> (16 * e));
  std::memcpy(&x, &bits, 2);
  if constexpr (std::is_same_v<T, __half>) return __half2float(x);
  else return __bfloat162float(x);
}

// D = A * B + C for one warp. A is 16 x K (row), B is K x 8 (col), C/D 16 x 8 float, K = 8 or 16.
// Lane layouts from the PTX ISA (g = lane / 4, t = lane % 4):
//   A: register r holds row g + 8 * (r % 2), columns 2t, 2t+1 (+ 8 for r >= 2, K = 16 only)
//   B: register r holds rows 2t, 2t+1 (+ 8 for r = 1, K = 16 only), column g
//   C, D: element i holds row g + 8 * (i / 2), column 2t + i % 2
template <class T, int K>
inline void mma(float d[4], const uint32_t* a, const uint32_t* b, const float c[4]) {
  uint64_t mine[kSlotWords] = {};
  for (int r = 0; r < K / 4; ++r) mine[r] = a[r];      // A: 2 (K=8) or 4 (K=16) registers
  for (int r = 0; r < K / 8; ++r) mine[4 + r] = b[r];  // B: 1 or 2 registers
  const auto slots = runner().collective(K == 8 ? MMA_K8 : MMA_K16, mine, 6);
  const int lane = lane_id(), g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    float acc = c[i];
    for (int k = 0; k < K; ++k) {
      // A(row, k) lives in lane (row % 8) * 4 + (k % 8) / 2, register (row / 8) + 2 * (k / 8), half k % 2.
      const float av = frag_elem<T>(slots, (row % 8) * 4 + (k % 8) / 2, row / 8 + 2 * (k / 8), k % 2);
      // B(k, col) lives in lane col * 4 + (k % 8) / 2, register 4 + k / 8, half k % 2.
      const float bv = frag_elem<T>(slots, col * 4 + (k % 8) / 2, 4 + k / 8, k % 2);
      acc += av * bv;  // the product of two 16-bit floats is exact in float32
    }
    d[i] = acc;
  }
}

// ldmatrix.sync.aligned.m8n8.xN(.trans).shared.b16: lanes 8i..8i+7 give the row addresses of 8x8
// matrix i (each row 8 contiguous 16-bit values, 16-byte aligned). Without .trans lane l receives, in
// register i, row l / 4, columns 2(l % 4) and 2(l % 4) + 1 of matrix i; with .trans it receives rows
// 2(l % 4) and 2(l % 4) + 1 of column l / 4 (the fragment of the transposed matrix).
inline void ldmatrix(uint32_t* r, int num, bool trans, const void* row_address) {
  uint64_t mine[kSlotWords] = {(uint64_t)(uintptr_t)row_address};
  const auto slots = runner().collective(LDMATRIX, mine, 1);
  const int lane = lane_id();
  for (int i = 0; i < num * 8; ++i)
    if (slots[i][0] % 16 != 0) fail("ldmatrix: row address not 16-byte aligned");
  auto elem = [&](int matrix, int row, int col) {
    uint16_t v;
    std::memcpy(&v, (const char*)(uintptr_t)slots[8 * matrix + row][0] + 2 * col, 2);
    return (uint32_t)v;
  };
  for (int i = 0; i < num; ++i) {
    const int a = lane / 4, b = 2 * (lane % 4);
    r[i] = trans ? elem(i, b, a) | elem(i, b + 1, a) << 16 : elem(i, a, b) | elem(i, a, b + 1) << 16;
  }
}

// Global memory the host declared readable (cuda_emu_allow_global in selftest.cpp). When any range is
// declared, a cp.async reading outside all of them fails the launch ("global read out of bounds") --
// the tensor-core kernels fetch every tile this way. Plain loads cannot be intercepted; the tests put
// NaN guard bands around every tensor for those.
inline std::vector<std::pair<uintptr_t, uintptr_t>>& global_ranges() {
  static std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  return ranges;
}
inline bool global_readable(const void* p, size_t bytes) {
  const auto& ranges = global_ranges();
  if (ranges.empty()) return true;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (const auto& r : ranges)
    if (a >= r.first && a + bytes <= r.second) return true;
  return false;
}

// cp.async.cg.shared.global with 16 bytes: copies `src_bytes` (0 or 16) and zero-fills the rest.
// On emulated sm_80+ the copy is deferred to the latest moment the PTX rules allow -- the
// cp.async.wait_group that retires its commit group -- so reading the destination before that wait
// (plus a __syncthreads for other threads' copies) sees stale shared memory and a test fails. Below
// sm_80 the wrapper in ptx.cuh is an ordinary load/store on a GPU, so the copy happens at once.
inline void cp_async_16(void* smem_dst, const void* global_src, int src_bytes) {
  if ((uintptr_t)smem_dst % 16 || (uintptr_t)global_src % 16) fail("cp.async: address not 16-byte aligned");
  if (src_bytes > 0 && !global_readable(global_src, (size_t)src_bytes))
    fail("cp.async: global read out of bounds (outside every tensor the launch was given)");
  const AsyncCopy copy{smem_dst, global_src, src_bytes};
  if (config().arch < 80) copy.run();
  else runner().fibers[runner().current].open_copies.push_back(copy);
}
inline void cp_async_commit() {
  Fiber& f = runner().fibers[runner().current];
  f.copy_groups.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}
inline void cp_async_wait(int pending) {
  Fiber& f = runner().fibers[runner().current];
  for (; (int)f.copy_groups.size() > pending; f.copy_groups.pop_front())
    for (const AsyncCopy& c : f.copy_groups.front()) c.run();
}

template <class T>
inline T shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a 32/64-bit value");
  uint64_t mine[kSlotWords] = {};
  std::memcpy(mine, &v, sizeof(T));
  const auto slots = runner().collective(SHFL, mine, 1);
  T out;
  std::memcpy(&out, &slots[src_lane][0], sizeof(T));
  return out;
}
inline void check_full_mask(unsigned mask) {
  if (mask != 0xffffffffu) fail("warp collective with a partial mask: only full warps are emulated");
}
}  // namespace cuda_emu

// ---- device functions the kernels call ------------------------------------------------------------
inline void __syncthreads() { cuda_emu::runner().block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  cuda_emu::check_full_mask(mask);
  uint64_t none[cuda_emu::kSlotWords] = {};
  cuda_emu::runner().collective(cuda_emu::SYNCWARP, none, 0);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  cuda_emu::check_full_mask(mask);
  const int lane = cuda_emu::lane_id();
  return cuda_emu::shuffle(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  cuda_emu::check_full_mask(mask);
  const int lane = cuda_emu::lane_id(), src = lane ^ lane_mask;
  return cuda_emu::shuffle(v, src < ((lane & ~(width - 1)) + width) ? src : lane);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  cuda_emu::check_full_mask(mask);
  const int lane = cuda_emu::lane_id(), src = lane + (int)delta;
  return cuda_emu::shuffle(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
inline float atomicAdd(float* address, float value) {
  // A compare-and-swap loop on the bit pattern: blocks may run on several OS threads at once.
  uint32_t old = __atomic_load_n((uint32_t*)address, __ATOMIC_RELAXED), desired;
  do desired = cuda_emu::float_bits(cuda_emu::bits_float(old) + value);
  while (!__atomic_compare_exchange_n((uint32_t*)address, &old, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return cuda_emu::bits_float(old);
}
[[noreturn]] inline void __trap() { cuda_emu::fail("__trap() called"); }

// ---- host-side runtime ---------------------------------------------------------------------------
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = cuda_emu::last_error;
  cuda_emu::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure (emulated kernel failed; see cuda_emu::last_error_message())";
  }
  return "unknown error";
}
inline cudaError_t cudaGetDevice(int* device) { *device = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrComputeCapabilityMajor ? cuda_emu::config().arch / 10 : cuda_emu::config().arch % 10;
  return cudaSuccess;
}
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
template <class F>
inline cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
