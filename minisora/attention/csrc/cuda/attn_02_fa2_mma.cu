// attn_02_fa2_mma.cu -- stage 2: FlashAttention-2 loop order on tensor cores (fp16 / bf16).
//
// What changed from stage 1:
//  * Tensor cores. Q K^T and P V are computed by mma.sync (ptx.cuh): 16x8x16 tiles per warp
//    instruction, 16-bit inputs, fp32 accumulators. On sm_75 (Colab T4) each m16n8k16 is issued as two
//    m16n8k8 (fp16 only); bf16 needs sm_80. Inputs stay 16-bit in shared memory (half the bytes).
//  * FA2 work split. A block (4 warps) owns 64 query rows and each warp owns 16 of them for the whole
//    key loop: no warp ever needs another warp's row statistics, so the softmax needs no shared memory
//    and no __syncthreads -- only quad shuffles (fa2_common.cuh). (FA1 split the keys across warps and
//    had to merge partial results through shared memory.) Q fragments are loaded into registers once.
//  * P never leaves registers: the accumulator layout of S is reused as the A operand of P V.
//  * The 1/l normalisation happens once after the loop, and l is reduced across the quad only then.
// What it does not do yet (stage 3): tiles are stored row-major without padding, so a warp reading
// a fragment column hits the same bank from 8 rows (8-way conflicts for d = 64), fragments are read
// with scalar 32-bit loads, and loading the next K/V tile does not overlap with computing this one.
//
// Tiles: Bq = 64 queries, Bk = 64 keys, d in {32, 64, 128} (template). Shared memory (64 + 2 * 64) * d * 2
// bytes = 48 KB at d = 128. Tails: rows past Nq/Nk are zero-filled on load, keys past Nk masked to -inf,
// output rows past Nq not stored. Pointers must be 16-byte aligned (vector loads; launchers.cu checks).
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_75 -c attn_02_fa2_mma.cu -o /tmp/attn_02.o
#include "fa2_common.cuh"

namespace minisora {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kBq = 16 * kWarps;  // each warp: 16 query rows (the M of the mma)
constexpr int kBk = 64;

// rows [row0, row0 + R) of a (N, D) matrix into a dense (R, D) shared tile, 16 bytes per thread per
// step; rows past N become zeros (a zero V row times P = 0 keeps garbage/NaN out of the sum).
template <class T, int D, int R>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int row0, int N) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int row = idx / kChunks, ch = idx % kChunks;
    const uint4 val = row0 + row < N ? *reinterpret_cast<const uint4*>(src + (long long)(row0 + row) * D + 8 * ch)
                                     : make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(tile + row * D + 8 * ch) = val;
  }
}
__device__ __forceinline__ uint32_t ld_u32(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

template <class T, int D>
__global__ __launch_bounds__(kThreads) void fa2_mma_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
    float* __restrict__ lse, int Nq, int Nk, int num_q_blocks, float scale_log2) {
  __shared__ __align__(16) T Qs[kBq * D];
  __shared__ __align__(16) T Ks[kBk * D];
  __shared__ __align__(16) T Vs[kBk * D];

  const long long bh = blockIdx.x / num_q_blocks;
  const int q0 = (blockIdx.x % num_q_blocks) * kBq;
  const T* kh = k + bh * Nk * D;
  const T* vh = v + bh * Nk * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  load_tile<T, D, kBq>(Qs, q + bh * Nq * D, q0, Nq);
  __syncthreads();
  // This warp's 16 x D slice of Q as A fragments, one per 16 columns (a 16 x 16 block).
  uint32_t qf[D / 16][4];
  const T* qw = Qs + warp * 16 * D;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = ld_u32(qw + g * D + 16 * kk + 2 * t);
    qf[kk][1] = ld_u32(qw + (g + 8) * D + 16 * kk + 2 * t);
    qf[kk][2] = ld_u32(qw + g * D + 16 * kk + 8 + 2 * t);
    qf[kk][3] = ld_u32(qw + (g + 8) * D + 16 * kk + 8 + 2 * t);
  }

  float o[D / 8][4] = {};
  RowState st;
  for (int k0 = 0; k0 < Nk; k0 += kBk) {
    load_tile<T, D, kBk>(Ks, kh, k0, Nk);
    load_tile<T, D, kBk>(Vs, vh, k0, Nk);
    __syncthreads();

    // S = Q K^T: B(kdim, key) = K[key][kdim], so a B fragment is two adjacent values of one K row.
    float s[kBk / 8][4] = {};
#pragma unroll
    for (int n = 0; n < kBk / 8; ++n)
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const T* krow = Ks + (8 * n + g) * D + 16 * kk + 2 * t;
        const uint32_t b[2] = {ld_u32(krow), ld_u32(krow + 8)};
        mma_m16n8k16<T>(s[n], qf[kk], b);
      }
    online_softmax(s, o, st, k0, Nk, scale_log2);

    // O += P V: B(key, col) = V[key][col], so a B fragment takes two values from a column of V.
#pragma unroll
    for (int kk = 0; kk < kBk / 16; ++kk) {
      uint32_t a[4];
      p_fragment<T>(s, kk, a);
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const T* vcol = Vs + (16 * kk + 2 * t) * D + 8 * n + g;
        const uint32_t b[2] = {pack_bits(vcol[0], vcol[D]), pack_bits(vcol[8 * D], vcol[9 * D])};
        mma_m16n8k16<T>(o[n], a, b);
      }
    }
    __syncthreads();  // everyone is done with Ks/Vs before the next tile overwrites them
  }
  store_output<T, D>(o, st, out + bh * Nq * D, lse + bh * Nq, q0 + 16 * warp, Nq);
}

template <class T, int D>
cudaError_t launch_for_head_dim(const T* q, const T* k, const T* v, T* out, float* lse, int BH, int Nq, int Nk,
                                float scale, cudaStream_t stream) {
  const int num_q_blocks = ceil_div(Nq, kBq);
  auto kernel = fa2_mma_kernel<T, D>;
  MINISORA_LAUNCH(kernel, dim3((unsigned)(BH * (long long)num_q_blocks)), dim3(kThreads), stream,
                  q, k, v, out, lse, Nq, Nk, num_q_blocks, scale * kLog2e);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t fa2_mma_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                            int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream) {
  switch (d) {
    case 32: return launch_for_head_dim<T, 32>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 64: return launch_for_head_dim<T, 64>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 128: return launch_for_head_dim<T, 128>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
  }
  return cudaErrorInvalidValue;  // launchers.cu checks d first
}

#define MINISORA_INSTANTIATE(T)                                                                         \
  template cudaError_t fa2_mma_forward<T>(const T*, const T*, const T*, T*, float*, int, int, int, int, \
                                          float, cudaStream_t);
MINISORA_INSTANTIATE(__half)
MINISORA_INSTANTIATE(__nv_bfloat16)
#undef MINISORA_INSTANTIATE

}  // namespace minisora
