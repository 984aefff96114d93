// fa2_common.cuh -- the math shared by the tensor-core stages (attn_02, attn_03, attn_bwd_mma).
//
// Both stages give each warp 16 query rows and keep everything per row in registers, in the mma
// accumulator layout: lane (g = lane / 4, t = lane % 4) holds rows g and g + 8, and in each 16x8 tile
// columns 2t and 2t + 1 (ptx.cuh). A row therefore lives in the 4 lanes of one quad, and row-wise
// reductions are two __shfl_xor_sync steps (lane ^ 1, lane ^ 2). Stages 2 and 3 differ only in how
// tiles travel from global to shared memory to registers; the online softmax below is common.
#pragma once
#include "ptx.cuh"

namespace minisora {

// ---- swizzled shared-memory tiles (stage 3 and the tensor-core backward) -------------------------
// Element offset of chunk `ch` (8 values) of row `row` in a swizzled (rows, D) tile.
template <int D>
__device__ __forceinline__ int swizzled(int row, int ch) {
  constexpr int kChunks = D / 8;
  const int f = kChunks >= 8 ? row % 8 : (row / (8 / kChunks)) % kChunks;
  return row * D + 8 * (ch ^ f);
}

// Issues cp.async copies of rows [row0, row0 + R) of a (N, D) matrix into a swizzled tile (no wait), the
// block's kThreads threads sharing the 16-byte chunks. Rows past N are zero-filled by the copy itself.
template <class T, int D, int R, int kThreads>
__device__ __forceinline__ void load_tile_async(T* tile, const T* src, int row0, int N) {
  constexpr int kChunks = D / 8;
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int row = idx / kChunks, ch = idx % kChunks;
    const bool valid = row0 + row < N;
    const T* from = valid ? src + (long long)(row0 + row) * D + 8 * ch : src;  // never read when !valid
    cp_async_16(tile + swizzled<D>(row, ch), from, valid);
  }
}


// Running softmax state of the two rows a lane holds (index h: 0 -> row g, 1 -> row g + 8).
struct RowState {
  float m[2] = {-INFINITY, -INFINITY};  // running max of the base-2 logits s * scale * log2(e)
  float l[2] = {0.f, 0.f};              // running sum of 2^(logit - m) over THIS lane's columns only:
                                        // the quad's partial sums are combined once, at the end
};

// Folds one key tile into the running softmax. s: the warp's 16 x (8 * kTiles) scores S = Q K^T of
// this tile (unscaled; keys key0, key0 + 1, ...), overwritten with P = 2^(s * scale_log2 - m_new).
// o: the 16 x (8 * kOTiles) output accumulator, rescaled by 2^(m_old - m_new).
// The max is taken over the raw scores and scaled once per row, so each element costs one FFMA and
// one exp2 (FlashAttention-2's softmax_scale_log2 trick). That needs scale_log2 > 0: launchers.cu sends
// a non-positive scale to stage 1.
template <int kTiles, int kOTiles>
__device__ __forceinline__ void online_softmax(float (&s)[kTiles][4], float (&o)[kOTiles][4], RowState& st,
                                               int key0, int Nk, float scale_log2) {
  const int t = threadIdx.x % 4;
  const bool tail = key0 + 8 * kTiles > Nk;  // the same for the whole block: no divergence
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < kTiles; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (tail && key0 + 8 * n + 2 * t + i % 2 >= Nk) s[n][i] = -INFINITY;  // keys past Nk
      tile_max[i / 2] = fmaxf(tile_max[i / 2], s[n][i]);
    }
  float alpha[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
    tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
    const float m_new = fmaxf(st.m[h], tile_max[h] * scale_log2);  // finite: each tile has a valid key
    alpha[h] = exp2f(st.m[h] - m_new);                             // 0 on the first tile (m = -inf)
    st.m[h] = m_new;
    st.l[h] *= alpha[h];
  }
#pragma unroll
  for (int n = 0; n < kTiles; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[n][i] = exp2f(fmaf(s[n][i], scale_log2, -st.m[i / 2]));  // -inf (masked) -> 0
      st.l[i / 2] += s[n][i];
    }
#pragma unroll
  for (int n = 0; n < kOTiles; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[n][i] *= alpha[i / 2];
}

// The A fragment (16 x 16, keys 16 * kk .. 16 * kk + 15) of P for the P V product, straight from the
// registers of S: the accumulator layout of tiles 2kk and 2kk+1 is exactly the A layout of m16n8k16
// (row g / g+8, columns 2t, 2t+1 / 2t+8, 2t+9). P is rounded to T here; l above used it unrounded.
template <class T, int kTiles>
__device__ __forceinline__ void p_fragment(const float (&p)[kTiles][4], int kk, uint32_t a[4]) {
  a[0] = pack2<T>(p[2 * kk][0], p[2 * kk][1]);
  a[1] = pack2<T>(p[2 * kk][2], p[2 * kk][3]);
  a[2] = pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
  a[3] = pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
}

// O = o / l for the warp's rows [row0, row0 + 16) (rows >= Nq are skipped) and lse = (m + log2 l) ln 2.
// out points at the (Nq, D) matrix of this (batch, head), lse at its Nq floats.
template <class T, int D>
__device__ __forceinline__ void store_output(float (&o)[D / 8][4], RowState& st, T* out, float* lse,
                                             int row0, int Nq) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    st.l[h] += __shfl_xor_sync(0xffffffffu, st.l[h], 1);
    st.l[h] += __shfl_xor_sync(0xffffffffu, st.l[h], 2);
    const int row = row0 + g + 8 * h;
    if (row < Nq) {
      const float inv_l = 1.f / st.l[h];
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(out + (long long)row * D + 8 * n + 2 * t) =
            pack2<T>(o[n][2 * h] * inv_l, o[n][2 * h + 1] * inv_l);
      if (t == 0) lse[row] = (st.m[h] + log2f(st.l[h])) * kLn2;
    }
  }
}

}  // namespace minisora
