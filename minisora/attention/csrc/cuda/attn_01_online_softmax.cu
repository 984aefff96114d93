// attn_01_online_softmax.cu -- stage 1: one fused kernel, FlashAttention-1 style, on CUDA cores.
//
// What changed from stage 0: S and P never reach global memory. A block owns Bq = 32 query rows,
// keeps them in shared memory, and streams K and V through shared memory Bk keys at a time. For each
// key tile it computes the Bq x Bk scores, and folds them into a running ("online") softmax:
//
//   m_new = max(m, max_j s_j)                 running row maximum (base-2 logits: s = scale*log2(e)*q.k)
//   alpha = 2^(m - m_new)                     how much the old terms shrink under the new maximum
//   l     = alpha * l + sum_j 2^(s_j - m_new) running denominator
//   o     = alpha * o + sum_j 2^(s_j - m_new) v_j
//
// and divides by l once at the end; lse = (m + log2 l) * ln 2 is written for the backward pass.
// Memory is O(N) and K/V are read from DRAM once per query block instead of S being written and
// read N^2 times. Math is fp32 (fp16/bf16 inputs are converted on load), as is shared memory.
//
// Thread mapping (128 threads): thread t serves query row r = t / 4 of the tile; the 4 threads of a row
// (a "quad": adjacent lanes of one warp) split its keys (key c + 4j for quad lane c) and its output
// columns (c + 4i). Row max and row sum are combined across the quad with two __shfl_xor_sync steps.
// Shared-memory rows of Q and K are padded to d + 1 floats so the 8 rows / 4 keys a warp reads at
// one time fall in different banks (stage 3 replaces padding with a swizzle).
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_80 -c attn_01_online_softmax.cu -o /tmp/attn_01.o
#include "common.cuh"

namespace minisora {
namespace {

constexpr int kThreads = 128;
constexpr int kBq = 32;             // query rows per block
constexpr int kQuad = 4;            // threads per query row
static_assert(kBq * kQuad == kThreads, "one quad of threads per query row");

template <class T, int D>
__global__ __launch_bounds__(kThreads) void online_softmax_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
    float* __restrict__ lse, int Nq, int Nk, int num_q_blocks, float scale_log2) {
  constexpr int kBk = D == 128 ? 16 : 32;  // keys per tile (d = 128 halves it to stay under 48 KB)
  constexpr int kKeysPerThread = kBk / kQuad, kColsPerThread = D / kQuad;
  __shared__ float Qs[kBq][D + 1];
  __shared__ float Ks[kBk][D + 1];
  __shared__ float Vs[kBk][D];
  __shared__ float Ps[kBq][kBk + 1];

  const long long bh = blockIdx.x / num_q_blocks;
  const int q0 = (blockIdx.x % num_q_blocks) * kBq;
  const T* qh = q + bh * Nq * D;
  const T* kh = k + bh * Nk * D;
  const T* vh = v + bh * Nk * D;
  const int tid = threadIdx.x, r = tid / kQuad, c = tid % kQuad;

  for (int idx = tid; idx < kBq * D; idx += kThreads) {  // consecutive threads, consecutive columns
    const int row = idx / D, col = idx % D;
    Qs[row][col] = q0 + row < Nq ? to_float(qh[(long long)(q0 + row) * D + col]) : 0.f;
  }
  float o[kColsPerThread];
  for (int i = 0; i < kColsPerThread; ++i) o[i] = 0.f;
  float m = -INFINITY, l = 0.f;

  for (int k0 = 0; k0 < Nk; k0 += kBk) {
    __syncthreads();  // all reads of the previous K/V/P tiles are done (and, first time, Qs is written)
    for (int idx = tid; idx < kBk * D; idx += kThreads) {
      const int row = idx / D, col = idx % D;
      const bool valid = k0 + row < Nk;  // rows past Nk are zeros: they must not inject NaNs into P V
      Ks[row][col] = valid ? to_float(kh[(long long)(k0 + row) * D + col]) : 0.f;
      Vs[row][col] = valid ? to_float(vh[(long long)(k0 + row) * D + col]) : 0.f;
    }
    __syncthreads();

    float s[kKeysPerThread];
    for (int j = 0; j < kKeysPerThread; ++j) s[j] = 0.f;
    for (int kk = 0; kk < D; ++kk) {
      const float qv = Qs[r][kk];
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) s[j] += qv * Ks[c + kQuad * j][kk];
    }
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) {
      s[j] = k0 + c + kQuad * j < Nk ? s[j] * scale_log2 : -INFINITY;  // mask the tail keys
      tile_max = fmaxf(tile_max, s[j]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float m_new = fmaxf(m, tile_max);  // finite: every tile has at least one valid key
    const float alpha = exp2f(m - m_new);    // exp2(-inf) = 0 on the first tile
    float tile_sum = 0.f;
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) {
      const float p = exp2f(s[j] - m_new);
      Ps[r][c + kQuad * j] = p;
      tile_sum += p;
    }
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 2);
    l = alpha * l + tile_sum;
    m = m_new;
    // The quad reads the whole P row its four threads just wrote: they share a warp, so a warp-level
    // barrier (which also orders their shared-memory accesses) is enough.
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kColsPerThread; ++i) o[i] *= alpha;
    for (int j = 0; j < kBk; ++j) {
      const float p = Ps[r][j];
#pragma unroll
      for (int i = 0; i < kColsPerThread; ++i) o[i] += p * Vs[j][c + kQuad * i];
    }
  }

  if (q0 + r < Nq) {
    T* orow = out + (bh * Nq + q0 + r) * D;
    const float inv_l = 1.f / l;
#pragma unroll
    for (int i = 0; i < kColsPerThread; ++i) orow[c + kQuad * i] = from_float<T>(o[i] * inv_l);
    if (c == 0) lse[bh * Nq + q0 + r] = (m + log2f(l)) * kLn2;
  }
}

template <class T, int D>
cudaError_t launch_for_head_dim(const T* q, const T* k, const T* v, T* out, float* lse, int BH, int Nq, int Nk,
                                float scale, cudaStream_t stream) {
  const int num_q_blocks = ceil_div(Nq, kBq);
  auto kernel = online_softmax_kernel<T, D>;
  MINISORA_LAUNCH(kernel, dim3((unsigned)(BH * (long long)num_q_blocks)), dim3(kThreads), stream,
                  q, k, v, out, lse, Nq, Nk, num_q_blocks, scale * kLog2e);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t online_softmax_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                                   int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream) {
  switch (d) {
    case 32: return launch_for_head_dim<T, 32>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 64: return launch_for_head_dim<T, 64>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 128: return launch_for_head_dim<T, 128>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
  }
  return cudaErrorInvalidValue;  // launchers.cu checks d first
}

#define MINISORA_INSTANTIATE(T)                                                                         \
  template cudaError_t online_softmax_forward<T>(const T*, const T*, const T*, T*, float*, int, int, int, \
                                                 int, float, cudaStream_t);
MINISORA_INSTANTIATE(float)
MINISORA_INSTANTIATE(__half)
MINISORA_INSTANTIATE(__nv_bfloat16)
#undef MINISORA_INSTANTIATE

}  // namespace minisora
