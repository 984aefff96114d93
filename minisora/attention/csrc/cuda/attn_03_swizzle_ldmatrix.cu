// attn_03_swizzle_ldmatrix.cu -- stage 3: stage 2's math with a better memory pipeline and FA2-sized tiles.
//
// Tri Dao, FlashAttention-2 (arXiv:2307.08691), §3.3 and its CUTLASS kernels; FlashAttention
// (arXiv:2205.14135) for the tiling itself. What changed from stage 2:
//  * ldmatrix. One warp instruction loads four 8x8 tiles from shared memory directly in mma fragment
//    layout (ptx.cuh) -- Q and K fragments as they are, V fragments with .trans (V is row-major but P V
//    needs it column-wise). It replaces 4 scalar loads + 2 packs per fragment register of stage 2.
//  * XOR swizzle instead of padding. A shared tile row is d/8 chunks of 16 bytes; chunk c of row r is
//    stored at chunk position c ^ f(r). ldmatrix reads the same logical chunk of 8 consecutive rows in
//    one phase; unswizzled those 8 chunks sit in the same 4 banks (row stride 64/128/256 bytes), with the
//    swizzle they cover all 32 banks. Padding would also fix banks but breaks the 16-byte alignment
//    ldmatrix and cp.async need and wastes shared memory. f(r) = r % 8 when a row has >= 8 chunks
//    (d = 64, 128); for d = 32 (4 chunks, two rows per 128 bytes) f(r) = (r / 2) % 4.
//  * cp.async pipelining (sm_80+). K and V tiles are copied global -> shared without passing through
//    registers, in separate commit groups: S = Q K^T starts as soon as K has landed while V is still in
//    flight, and the copies of tile j+1 are issued into a second buffer before tile j is computed.
//    sm_75 has no cp.async (cp_async_16 is a synchronous copy there), so a second buffer would cost
//    shared memory and overlap nothing: the T4 configuration has one.
//  * FA2-sized tiles. 128 query rows per block for d <= 64: on sm_80+ 4 warps x 32 rows (two m16 row
//    tiles per warp, so every K/V fragment loaded serves two mma), on sm_75 8 warps x 16 rows as
//    flash-attention-turing does, with 32-key tiles (two blocks of 8 warps leave 128 registers per
//    thread on a T4). d = 128 keeps 4 x 16 rows (its O accumulator alone is 64 registers per row
//    tile). 64 keys per tile otherwise.
//  * Shared memory is dynamic (above 48 KB where a card has it, via cudaFuncSetAttribute), and Q's tile
//    lives in the buffer K/V tile 1 will use: once Q is in registers its shared memory is reused.
//    __launch_bounds__(threads, 2) keeps two blocks per SM.
//  * The softmax scale is one FFMA before exp2 (fa2_common.cuh), and O leaves through shared memory in
//    16-byte stores of whole rows instead of 4-byte stores scattered over the mma layout.
//
// Shared memory (KB, d = 32 / 64 / 128): sm_80+ 16 / 32 / 64, sm_75 8 / 16 / 32.
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_80 -c attn_03_swizzle_ldmatrix.cu -o /tmp/attn_03.o
#include "fa2_common.cuh"

namespace minisora {
namespace {

// Tile configuration per (head dim, architecture class).
template <int D, bool kSm80>
struct Config {
  static constexpr int kWarps = (!kSm80 && D <= 64) ? 8 : 4;
  static constexpr int kRowTiles = (kSm80 && D <= 64) ? 2 : 1;  // m16 row tiles per warp
  static constexpr int kBq = 16 * kWarps * kRowTiles;
  // 8 warps x 2 blocks on a T4 leave 128 registers per thread: 32 keys per tile keep S small enough.
  static constexpr int kBk = kWarps == 8 ? 32 : 64;
  static constexpr int kStages = kSm80 ? 2 : 1;  // K/V buffers
  static constexpr int kThreads = 32 * kWarps;
  // Q lives in the region K/V tile 1 (one stage: tile 0) will use, and O is staged at the start.
  static constexpr int kQElems = kBq * D, kStageElems = 2 * kBk * D;
  static constexpr int kQOffset = kStageElems * (kStages - 1);
  static constexpr size_t kSmemBytes =
      2 * (kQOffset + kQElems > kStages * kStageElems ? kQOffset + kQElems : kStages * kStageElems);
};

template <class T, int D, bool kSm80>
__device__ __forceinline__ void forward_block(const T* __restrict__ q, const T* __restrict__ k,
                                              const T* __restrict__ v, T* __restrict__ out, float* __restrict__ lse,
                                              int Nq, int Nk, int num_q_blocks, float scale_log2) {
  using C = Config<D, kSm80>;
  constexpr int kThreads = C::kThreads, kBq = C::kBq, kBk = C::kBk, kR = C::kRowTiles, kStages = C::kStages;
  MINISORA_DYNAMIC_SMEM(smem);
  T* const buffers = reinterpret_cast<T*>(smem);  // kStages x [K tile | V tile], swizzled
  auto Ks = [&](int stage) { return buffers + stage * 2 * kBk * D; };
  auto Vs = [&](int stage) { return buffers + stage * 2 * kBk * D + kBk * D; };
  T* const Qs = buffers + C::kQOffset;  // where K/V tile 1 (one stage: tile 0) will land

  const long long bh = blockIdx.x / num_q_blocks;
  const int q0 = (blockIdx.x % num_q_blocks) * kBq;
  const T* kh = k + bh * Nk * D;
  const T* vh = v + bh * Nk * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int num_k_blocks = ceil_div(Nk, kBk);

  load_tile_async<T, D, kBq, kThreads>(Qs, q + bh * Nq * D, q0, Nq);
  cp_async_commit();
  if constexpr (kStages == 2) {  // tile 0 in flight behind Q, K and V in their own groups
    load_tile_async<T, D, kBk, kThreads>(Ks(0), kh, 0, Nk);
    cp_async_commit();
    load_tile_async<T, D, kBk, kThreads>(Vs(0), vh, 0, Nk);
    cp_async_commit();
    cp_async_wait<2>();  // Q has landed (this thread's part) ...
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();  // ... and everyone's part is visible.

  // Q fragments: lanes 0-7 address rows 0-7 of a 16-row tile at chunk 2kk (matrix 0 -> a[0]), lanes 8-15
  // rows 8-15 (a[1]), lanes 16-23 rows 0-7 at chunk 2kk+1 (a[2]), lanes 24-31 (a[3]).
  uint32_t qf[kR][D / 16][4];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      ldmatrix<4, false>(qf[r][kk], Qs + swizzled<D>(16 * (warp * kR + r) + lane % 16, 2 * kk + lane / 16));
  __syncthreads();  // Q is in registers: its shared memory is a K/V buffer from now on

  float o[kR][D / 8][4] = {};
  RowState st[kR];
  for (int j = 0; j < num_k_blocks; ++j) {
    const int cur = kStages == 2 ? j % 2 : 0;
    if constexpr (kStages == 2) {
      if (j + 1 < num_k_blocks) {  // prefetch tile j+1 into the other buffer, then wait for K_j only
        load_tile_async<T, D, kBk, kThreads>(Ks(cur ^ 1), kh, (j + 1) * kBk, Nk);
        cp_async_commit();
        load_tile_async<T, D, kBk, kThreads>(Vs(cur ^ 1), vh, (j + 1) * kBk, Nk);
        cp_async_commit();
        cp_async_wait<3>();  // in flight: K_j, V_j, K_j+1, V_j+1 -> K_j done
      } else {
        cp_async_wait<1>();  // K_j done, V_j may still be in flight
      }
    } else {
      load_tile_async<T, D, kBk, kThreads>(Ks(0), kh, j * kBk, Nk);
      cp_async_commit();
      load_tile_async<T, D, kBk, kThreads>(Vs(0), vh, j * kBk, Nk);
      cp_async_commit();
      cp_async_wait<1>();
    }
    __syncthreads();

    // S = Q K^T. One ldmatrix.x4 gives the B fragments of key tile n for two k-steps: lanes 8i..8i+7
    // address keys 8n..8n+7 at chunk 2kk + i, so b[0..1] serve k-step kk and b[2..3] k-step kk+1; each
    // serves the warp's kR row tiles.
    float s[kR][kBk / 8][4] = {};
#pragma unroll
    for (int n = 0; n < kBk / 8; ++n)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b[4];
        ldmatrix<4, false>(b, Ks(cur) + swizzled<D>(8 * n + lane % 8, 2 * kk + lane / 8));
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          mma_m16n8k16<T>(s[r][n], qf[r][kk], b);
          mma_m16n8k16<T>(s[r][n], qf[r][kk + 1], b + 2);
        }
      }
#pragma unroll
    for (int r = 0; r < kR; ++r) online_softmax(s[r], o[r], st[r], j * kBk, Nk, scale_log2);

    if constexpr (kStages == 2) {
      if (j + 1 < num_k_blocks) cp_async_wait<2>();  // V_j done
      else cp_async_wait<0>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    // O += P V. ldmatrix.x4.trans over keys 16kk..16kk+15: lanes 0-7 address keys 0-7 and lanes 8-15
    // keys 8-15 at chunk n (b[0], b[1] of column tile n); lanes 16-31 the same keys at chunk n+1.
#pragma unroll
    for (int kk = 0; kk < kBk / 16; ++kk) {
      uint32_t a[kR][4];
#pragma unroll
      for (int r = 0; r < kR; ++r) p_fragment<T>(s[r], kk, a[r]);
#pragma unroll
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        ldmatrix<4, true>(b, Vs(cur) + swizzled<D>(16 * kk + lane % 16, n + lane / 16));
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          mma_m16n8k16<T>(o[r][n], a[r], b);
          mma_m16n8k16<T>(o[r][n + 1], a[r], b + 2);
        }
      }
    }
    __syncthreads();  // buffer `cur` is refilled next (two stages: by the next prefetch; one: right away)
  }

  // O = o / l into shared memory (swizzled rows of the block's tile), lse = (m + log2 l) ln 2; then the
  // block writes whole rows of O in 16-byte stores.
  T* const Os = buffers;
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = st[r].l[h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv_l = 1.f / l;
      const int row = 16 * (warp * kR + r) + g + 8 * h;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(Os + swizzled<D>(row, n) + 2 * t) =
            pack2<T>(o[r][n][2 * h] * inv_l, o[r][n][2 * h + 1] * inv_l);
      if (t == 0 && q0 + row < Nq) lse[bh * Nq + q0 + row] = (st[r].m[h] + log2f(l)) * kLn2;
    }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kBq * (D / 8); idx += kThreads) {
    const int row = idx / (D / 8), ch = idx % (D / 8);
    if (q0 + row < Nq)
      *reinterpret_cast<uint4*>(out + (bh * Nq + q0 + row) * D + 8 * ch) =
          *reinterpret_cast<const uint4*>(Os + swizzled<D>(row, ch));
  }
}

// Each architecture's binary holds only the configuration it runs (sm_75: kSm80 = false; sm_80+: true).
template <class T, int D, bool kSm80>
__global__ __launch_bounds__(Config<D, kSm80>::kThreads, 2) void swizzle_ldmatrix_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
    float* __restrict__ lse, int Nq, int Nk, int num_q_blocks, float scale_log2) {
#if defined(__CUDA_ARCH__)
  constexpr bool kCompiled = kSm80 == (__CUDA_ARCH__ >= 800);
#else
  constexpr bool kCompiled = true;  // the emulator runs both
#endif
  if constexpr (kCompiled) forward_block<T, D, kSm80>(q, k, v, out, lse, Nq, Nk, num_q_blocks, scale_log2);
  else __trap();
}

template <class T, int D, bool kSm80>
cudaError_t launch_for_head_dim(const T* q, const T* k, const T* v, T* out, float* lse, int BH, int Nq, int Nk,
                                float scale, cudaStream_t stream) {
  using C = Config<D, kSm80>;
  const int num_q_blocks = ceil_div(Nq, C::kBq);
  auto kernel = swizzle_ldmatrix_kernel<T, D, kSm80>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)C::kSmemBytes);
  if (err != cudaSuccess) return err;
  MINISORA_LAUNCH_SMEM(kernel, dim3((unsigned)(BH * (long long)num_q_blocks)), dim3(C::kThreads), C::kSmemBytes,
                       stream, q, k, v, out, lse, Nq, Nk, num_q_blocks, scale * kLog2e);
  return cudaGetLastError();
}

template <class T, bool kSm80>
cudaError_t launch_for_arch(const T* q, const T* k, const T* v, T* out, float* lse, int BH, int Nq, int Nk, int d,
                            float scale, cudaStream_t stream) {
  switch (d) {
    case 32: return launch_for_head_dim<T, 32, kSm80>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 64: return launch_for_head_dim<T, 64, kSm80>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
    case 128: return launch_for_head_dim<T, 128, kSm80>(q, k, v, out, lse, BH, Nq, Nk, scale, stream);
  }
  return cudaErrorInvalidValue;  // launchers.cu checks d first
}

}  // namespace

template <class T>
cudaError_t swizzle_ldmatrix_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                                     int BH, int Nq, int Nk, int d, float scale, int arch, cudaStream_t stream) {
  if (arch >= 80) return launch_for_arch<T, true>(q, k, v, out, lse, BH, Nq, Nk, d, scale, stream);
  if constexpr (std::is_same<T, __half>::value)  // bf16 tensor cores start at sm_80 (launchers.cu checks)
    return launch_for_arch<T, false>(q, k, v, out, lse, BH, Nq, Nk, d, scale, stream);
  return cudaErrorInvalidValue;
}

#define MINISORA_INSTANTIATE(T)                                                                   \
  template cudaError_t swizzle_ldmatrix_forward<T>(const T*, const T*, const T*, T*, float*, int, \
                                                   int, int, int, float, int, cudaStream_t);
MINISORA_INSTANTIATE(__half)
MINISORA_INSTANTIATE(__nv_bfloat16)
#undef MINISORA_INSTANTIATE

}  // namespace minisora
