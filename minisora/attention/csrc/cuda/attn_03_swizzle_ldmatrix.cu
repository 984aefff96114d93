// attn_03_swizzle_ldmatrix.cu -- stage 3: stage 2's math with a better memory pipeline.
//
// What changed from stage 2 (the math in fa2_common.cuh is untouched):
//  * ldmatrix. One warp instruction loads four 8x8 tiles from shared memory directly in mma fragment
//    layout (ptx.cuh) -- Q and K fragments as they are, V fragments with .trans (V is row-major but P V
//    needs it column-wise). It replaces 4 scalar loads + 2 packs per fragment register of stage 2.
//  * XOR swizzle instead of padding. A shared tile row is d/8 chunks of 16 bytes; chunk c of row r is
//    stored at chunk position c ^ f(r). ldmatrix reads the same logical chunk of 8 consecutive rows in
//    one phase; unswizzled those 8 chunks sit in the same 4 banks (row stride 64/128/256 bytes), with the
//    swizzle they cover all 32 banks. Padding would also fix banks but breaks the 16-byte alignment
//    ldmatrix and cp.async need and wastes shared memory. f(r) = r % 8 when a row has >= 8 chunks
//    (d = 64, 128); for d = 32 (4 chunks, two rows per 128 bytes) f(r) = (r / 2) % 4.
//  * cp.async double buffering (sm_80+). K/V tiles are copied global -> shared without passing
//    through registers, into one of two buffers, while the tensor cores work on the other; the copy of
//    tile j+1 is issued before computing tile j. On sm_75 cp_async_16 is a plain synchronous copy, so
//    the loop is the same and simply does not overlap. Rows past N are zero-filled by the copy itself.
//
// Tiles: Bq = 64 queries (4 warps x 16), Bk = 64 keys for d <= 64 and 32 for d = 128, so that
// Q + 2 x (K + V) fits the 48 KB of static shared memory (20 / 40 / 48 KB for d = 32 / 64 / 128).
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_80 -c attn_03_swizzle_ldmatrix.cu -o /tmp/attn_03.o
#include "fa2_common.cuh"

namespace minisora {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kBq = 16 * kWarps;

template <class T, int D>
__global__ __launch_bounds__(kThreads) void swizzle_ldmatrix_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
    float* __restrict__ lse, int Nq, int Nk, int num_q_blocks, float scale_log2) {
  constexpr int kBk = D == 128 ? 32 : 64;
  __shared__ __align__(128) T Qs[kBq * D];
  __shared__ __align__(128) T Ks[2][kBk * D];
  __shared__ __align__(128) T Vs[2][kBk * D];

  const long long bh = blockIdx.x / num_q_blocks;
  const int q0 = (blockIdx.x % num_q_blocks) * kBq;
  const T* kh = k + bh * Nk * D;
  const T* vh = v + bh * Nk * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int num_k_blocks = ceil_div(Nk, kBk);

  // Two commit groups in flight: Q, then K/V tile 0.
  load_tile_async<T, D, kBq, kThreads>(Qs, q + bh * Nq * D, q0, Nq);
  cp_async_commit();
  load_tile_async<T, D, kBk, kThreads>(Ks[0], kh, 0, Nk);
  load_tile_async<T, D, kBk, kThreads>(Vs[0], vh, 0, Nk);
  cp_async_commit();
  cp_async_wait<1>();  // Q has landed (this thread's part) ...
  __syncthreads();     // ... and everyone's part is visible.

  // Q fragments: lanes 0-7 address rows 0-7 of the warp's 16 rows at chunk 2kk (matrix 0 -> a[0]),
  // lanes 8-15 rows 8-15 (a[1]), lanes 16-23 rows 0-7 at chunk 2kk+1 (a[2]), lanes 24-31 (a[3]).
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix<4, false>(qf[kk], Qs + swizzled<D>(16 * warp + lane % 16, 2 * kk + lane / 16));

  float o[D / 8][4] = {};
  RowState st;
  for (int j = 0; j < num_k_blocks; ++j) {
    const int buf = j % 2;
    if (j + 1 < num_k_blocks) {  // prefetch tile j+1 into the other buffer, then wait for tile j only
      load_tile_async<T, D, kBk, kThreads>(Ks[buf ^ 1], kh, (j + 1) * kBk, Nk);
      load_tile_async<T, D, kBk, kThreads>(Vs[buf ^ 1], vh, (j + 1) * kBk, Nk);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    // S = Q K^T. One ldmatrix.x4 gives the B fragments of key tile n for two k-steps: lanes 8i..8i+7
    // address keys 8n..8n+7 at chunk 2kk + i, so b[0..1] serve k-step kk and b[2..3] k-step kk+1.
    float s[kBk / 8][4] = {};
#pragma unroll
    for (int n = 0; n < kBk / 8; ++n)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b[4];
        ldmatrix<4, false>(b, Ks[buf] + swizzled<D>(8 * n + lane % 8, 2 * kk + lane / 8));
        mma_m16n8k16<T>(s[n], qf[kk], b);
        mma_m16n8k16<T>(s[n], qf[kk + 1], b + 2);
      }
    online_softmax(s, o, st, j * kBk, Nk, scale_log2);

    // O += P V. ldmatrix.x4.trans over keys 16kk..16kk+15: lanes 0-7 address keys 0-7 and lanes 8-15
    // keys 8-15 at chunk n (b[0], b[1] of column tile n); lanes 16-31 the same keys at chunk n+1.
#pragma unroll
    for (int kk = 0; kk < kBk / 16; ++kk) {
      uint32_t a[4];
      p_fragment<T>(s, kk, a);
#pragma unroll
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        ldmatrix<4, true>(b, Vs[buf] + swizzled<D>(16 * kk + lane % 16, n + lane / 16));
        mma_m16n8k16<T>(o[n], a, b);
        mma_m16n8k16<T>(o[n + 1], a, b + 2);
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the prefetch of the next-but-one iteration
  }
  store_output<T, D>(o, st, out + bh * Nq * D, lse + bh * Nq, q0 + 16 * warp, Nq);
}

template <class T, int D>
cudaError_t launch_for_head_dim(const T* q, const T* k, const T* v, T* out, float* lse, int BH, int Nq, int Nk,
                                float scale, cudaStream_t stream) {
  const int num_q_blocks = ceil_div(Nq, kBq);
  auto kernel = swizzle_ldmatrix_kernel<T, D>;
  MINISORA_LAUNCH(kernel, dim3((unsigned)(BH * (long long)num_q_blocks)), dim3(kThreads), stream,
                  q, k, v, out, lse, Nq, Nk, num_q_blocks, scale * kLog2e);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t swizzle_ldmatrix_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                                     int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream) {
  switch (d) {
    case 32: return launch_for_head_dim<T, 32>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 64: return launch_for_head_dim<T, 64>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 128: return launch_for_head_dim<T, 128>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
  }
  return cudaErrorInvalidValue;  // launchers.cu checks d first
}

#define MINISORA_INSTANTIATE(T)                                                                   \
  template cudaError_t swizzle_ldmatrix_forward<T>(const T*, const T*, const T*, T*, float*, int, \
                                                   int, int, int, float, cudaStream_t);
MINISORA_INSTANTIATE(__half)
MINISORA_INSTANTIATE(__nv_bfloat16)
#undef MINISORA_INSTANTIATE

}  // namespace minisora
