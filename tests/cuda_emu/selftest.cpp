// cuda_emu_selftest.cpp -- small kernels that test the host emulation itself, plus the C functions
// tests/test_cuda_kernels.py uses to configure it. Compiled with g++ -DMINISORA_EMU together with the
// kernel sources of minisora/attention/csrc/cuda into one shared library loaded with ctypes.
#include "../../minisora/attention/csrc/cuda/ptx.cuh"

namespace {

// Sum of `in` per block: a shared-memory tree down to one warp, then shuffles. out[2b] is the sum
// reduced with __shfl_down_sync and broadcast from lane 0 with __shfl_sync, out[2b + 1] the same sum
// from a __shfl_xor_sync butterfly as seen by lane 31 (the test feeds integers, so both are exact).
// With `racy`, the barrier between writing the shared array and reading other threads' entries is
// missing -- the emulator must make that fail.
template <bool kRacy>
__global__ void block_sum_kernel(const float* in, float* out) {
  __shared__ float s[256];
  const int tid = threadIdx.x;
  s[tid] = in[blockIdx.x * blockDim.x + tid];
  if (!kRacy) __syncthreads();
  for (int stride = blockDim.x / 2; stride >= 32; stride /= 2) {
    if (tid < stride) s[tid] += s[tid + stride];
    __syncthreads();
  }
  if (tid < 32) {
    float down = s[tid], butterfly = s[tid];
    for (int off = 16; off > 0; off /= 2) {
      down += __shfl_down_sync(0xffffffffu, down, off);  // lane 0 ends with the sum
      butterfly += __shfl_xor_sync(0xffffffffu, butterfly, off);  // every lane does
    }
    const float total = __shfl_sync(0xffffffffu, down, 0);
    if (tid == 31) {
      out[2 * blockIdx.x] = total;
      out[2 * blockIdx.x + 1] = butterfly;
    }
  }
}

// Thread 0 leaves before the barrier the others wait at: the emulator reports a deadlock.
__global__ void early_exit_kernel(float* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

// One warp: load A (16 x K, row-major), B (K x 8, given as B^T: 8 x K row-major) and C (16 x 8) into
// registers by the PTX fragment formulas, run one mma, store D. K = 8 uses the raw m16n8k8 (fp16);
// K = 16 uses mma_m16n8k16 (one m16n8k16 on arch >= 80, two m16n8k8 below).
template <class T, int K>
__global__ void mma_kernel(const uint16_t* A, const uint16_t* Bt, const float* C, float* Dout) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto at = [&](const uint16_t* m, int row, int col) { return (uint32_t)m[row * K + col]; };
  uint32_t a[4], b[2];
  for (int r = 0; r < K / 4; ++r) {  // a[r]: row g + 8 (r % 2), cols 2t (+ 8 for r >= 2)
    const int row = g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
    a[r] = at(A, row, col) | at(A, row, col + 1) << 16;
  }
  for (int r = 0; r < K / 8; ++r) {  // b[r]: rows 2t, 2t+1 (+ 8 for r = 1), col g
    const int k = 2 * t + 8 * r;
    b[r] = at(Bt, g, k) | at(Bt, g, k + 1) << 16;
  }
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  if constexpr (K == 8) minisora::mma_m16n8k8_f16(d, a, b);
  else minisora::mma_m16n8k16<T>(d, a, b);
  for (int i = 0; i < 4; ++i) Dout[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// One warp: copy `num` 8x8 matrices (row r of matrix i at in[(8i + r) * 8]) to shared memory with the
// rows scattered by a permutation, then ldmatrix them; regs_out[lane * num + i] = register i of lane.
// `misalign` shifts every row address by 2 bytes, which ldmatrix forbids.
template <int N, bool kTrans>
__global__ void ldmatrix_kernel(const uint16_t* in, uint32_t* regs_out, int misalign) {
  __shared__ __align__(16) uint16_t tile[32 * 8 + 8];
  const int lane = threadIdx.x;
  auto slot = [](int row) { return (row * 13 + 5) % 32; };  // a permutation of the 32 row slots
  for (int row = lane; row < 8 * N; row += 32)
    for (int c = 0; c < 8; ++c) tile[slot(row) * 8 + c] = in[row * 8 + c];
  __syncwarp();
  uint32_t r[N];
  minisora::ldmatrix<N, kTrans>(r, tile + slot(lane % (8 * N)) * 8 + misalign);
  for (int i = 0; i < N; ++i) regs_out[lane * N + i] = r[i];
}

// Each of 32 threads copies one 16-byte chunk into shared memory with cp.async, then reads its
// neighbour's chunk after a __syncthreads. Without the wait_group the copies need not have landed.
__global__ void cp_async_kernel(const uint4* in, uint4* out, int wait) {
  __shared__ __align__(16) uint4 chunks[32];
  const int tid = threadIdx.x;
  chunks[tid] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  minisora::cp_async_16(&chunks[tid], &in[tid], true);
  minisora::cp_async_commit();
  if (wait) minisora::cp_async_wait<0>();
  __syncthreads();
  out[tid] = chunks[(tid + 1) % 32];
}

int finish() { return (int)cudaGetLastError(); }

}  // namespace

extern "C" {

void cuda_emu_configure(int arch, int schedule, unsigned long long seed, int workers) {
  cuda_emu::Config& c = cuda_emu::config();
  c.arch = arch;
  c.schedule = schedule;
  c.seed = seed;
  c.workers = workers;
}

// Declares [p, p + bytes) readable global memory for cp.async (see global_ranges in cuda_emu.h);
// cuda_emu_clear_globals() forgets every range (then nothing is checked).
void cuda_emu_allow_global(const void* p, unsigned long long bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  cuda_emu::global_ranges().emplace_back(a, a + bytes);
}
void cuda_emu_clear_globals() { cuda_emu::global_ranges().clear(); }

// The reason of the last failed launch ("" if none); the string lives until the next call.
const char* cuda_emu_error_message() {
  static thread_local std::string text;
  text = cuda_emu::last_error_message();
  return text.c_str();
}

// Host-side check of the emulated fp16/bf16 conversions: bit patterns out, and the round trip back.
void selftest_convert(const float* in, uint16_t* half_bits, uint16_t* bf16_bits, float* half_back,
                      float* bf16_back, int n) {
  for (int i = 0; i < n; ++i) {
    const __half h = __float2half_rn(in[i]);
    const __nv_bfloat16 b = __float2bfloat16_rn(in[i]);
    half_bits[i] = h.__x;
    bf16_bits[i] = b.__x;
    half_back[i] = __half2float(h);
    bf16_back[i] = __bfloat162float(b);
  }
}

int selftest_block_sum(const float* in, float* out, int blocks, int threads, int racy) {
  auto kernel = racy ? block_sum_kernel<true> : block_sum_kernel<false>;
  MINISORA_LAUNCH(kernel, dim3(blocks), dim3(threads), nullptr, in, out);
  return finish();
}

int selftest_early_exit(float* out, int threads) {
  auto kernel = early_exit_kernel;
  MINISORA_LAUNCH(kernel, dim3(1), dim3(threads), nullptr, out);
  return finish();
}

// k = 8 (fp16 only) or 16; bf16 = 1 selects bfloat16 operands.
int selftest_mma(int k, int bf16, const uint16_t* A, const uint16_t* Bt, const float* C, float* D) {
  if (k == 8) {
    auto kernel = mma_kernel<__half, 8>;
    MINISORA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, A, Bt, C, D);
  } else if (bf16) {
    auto kernel = mma_kernel<__nv_bfloat16, 16>;
    MINISORA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, A, Bt, C, D);
  } else {
    auto kernel = mma_kernel<__half, 16>;
    MINISORA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, A, Bt, C, D);
  }
  return finish();
}

int selftest_ldmatrix(int num, int trans, const uint16_t* in, uint32_t* regs_out, int misalign) {
  void (*kernel)(const uint16_t*, uint32_t*, int) =
      num == 1 ? (trans ? ldmatrix_kernel<1, true> : ldmatrix_kernel<1, false>)
      : num == 2 ? (trans ? ldmatrix_kernel<2, true> : ldmatrix_kernel<2, false>)
                 : (trans ? ldmatrix_kernel<4, true> : ldmatrix_kernel<4, false>);
  MINISORA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, in, regs_out, misalign);
  return finish();
}

int selftest_cp_async(const uint4* in, uint4* out, int wait) {
  auto kernel = cp_async_kernel;
  MINISORA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, in, out, wait);
  return finish();
}

}  // extern "C"
