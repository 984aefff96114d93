// attn_bwd_mma.cu -- FlashAttention-2 backward on tensor cores: fp16 from sm_75, bf16 from sm_80.
//
// Tri Dao, FlashAttention-2 (arXiv:2307.08691), Algorithm 2; FlashAttention (arXiv:2205.14135), §3.
// With P = softmax(scale Q K^T), O = P V and D_i = rowsum(dO_i * O_i) (attn_bwd.cu computes D):
//   dV = P^T dO     dP = dO V^T     dS = P * (dP - D)     dQ = scale dS K     dK = scale dS^T Q
//
// dkdv_kernel: one block of 4 warps per 64 keys; warp w owns keys 16w..16w+15 for the whole loop,
// so their dK and dV rows accumulate in registers (mma accumulator layout) over all query tiles.
// Per query tile (64 queries, 16 at d = 128):
//   * Q and dO tiles arrive in swizzled shared memory by cp.async (a plain copy on sm_75);
//   * S^T = K Q^T and dP^T = V dO^T on tensor cores: K and V rows are the A operand (ldmatrix), Q and
//     dO rows the B operand (ldmatrix) -- computing the transposes puts the warp's keys in the M
//     dimension, so P^T and dS^T come out in the A-fragment layout that dV += P^T dO and
//     dK += dS^T Q need, straight from registers (fa2_common.cuh: p_fragment);
//   * P^T is recomputed from the saved logsumexp in base 2 (one FFMA and an exp2 per element);
//   * dO and Q are the B operands of those two products, read with ldmatrix.trans;
//   * dQ (unless deterministic): dS^T is staged through swizzled shared memory (16-bit) and the
//     block computes this key block's share dS K of the query tile's dQ, 16 rows per warp, read back
//     with ldmatrix.trans; it is added to an fp32 accumulator with one atomicAdd per element per key
//     block (attn_bwd.cu converts it to the output dtype).
// dq_kernel (deterministic mode): one block per 64 queries, warp w owns 16 of them (Q and dO in
// registers as A fragments, as in the forward), loops over the key tiles, recomputes S, dP, P, dS
// and accumulates dQ in registers: no atomics, so a backward is bit-reproducible. It costs the
// recomputation of S and dP once more (7 instead of 5 matrix products).
//
// Shared memory is dynamic: 24.5 / 40.5 / 42.1 KB (dkdv, d = 32/64/128; 16 queries per step at d = 128
// keep its registers from spilling),
// 16 / 32 / 48 KB (dq). fp32 inputs, and bf16 before sm_80, take the CUDA-core kernels of attn_bwd.cu.
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_80 -c attn_bwd_mma.cu -o /tmp/attn_bwd_mma.o
#include "fa2_common.cuh"

namespace minisora {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kBk = 16 * kWarps;  // keys per dkdv block (16 per warp)
constexpr int kBqDq = 16 * kWarps;  // queries per dq block (16 per warp)
template <int D> __host__ __device__ constexpr int dkdv_bq() { return D == 128 ? 16 : 64; }  // queries per dkdv step
template <int D> __host__ __device__ constexpr int dq_bk() { return D == 128 ? 32 : 64; }    // keys per dq step

template <class T, int D> constexpr size_t dkdv_smem_bytes() {
  return sizeof(T) * (2 * kBk * D + 2 * dkdv_bq<D>() * D + kBk * dkdv_bq<D>()) + sizeof(float) * 2 * dkdv_bq<D>();
}
template <class T, int D> constexpr size_t dq_smem_bytes() { return sizeof(T) * (2 * kBqDq * D + 2 * dq_bk<D>() * D); }

// acc (16 x kN) += A B^T for the warp's 16 rows of A (rows 16 warp.. of the swizzled (., D) tile a_tile)
// and the kN rows of b_tile: ldmatrix for both, the B fragments of two k-steps per ldmatrix.x4.
template <class T, int D, int kN>
__device__ __forceinline__ void warp_product_t(float (&acc)[kN / 8][4], const T* a_tile, const T* b_tile, int warp,
                                               int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk += 2) {
    uint32_t a[2][4];
#pragma unroll
    for (int s = 0; s < 2; ++s)
      ldmatrix<4, false>(a[s], a_tile + swizzled<D>(16 * warp + lane % 16, 2 * (kk + s) + lane / 16));
#pragma unroll
    for (int n = 0; n < kN / 8; ++n) {
      uint32_t b[4];
      ldmatrix<4, false>(b, b_tile + swizzled<D>(8 * n + lane % 8, 2 * kk + lane / 8));
      mma_m16n8k16<T>(acc[n], a[0], b);
      mma_m16n8k16<T>(acc[n], a[1], b + 2);
    }
  }
}

// acc (16 x D) += A B for a 16 x 16 A fragment held in registers (p_fragment) and B = rows 16 kk..16 kk + 15
// of the swizzled (., D) tile b_tile, read transposed: dV += P^T dO, dK += dS^T Q, dQ += dS K.
template <class T, int D>
__device__ __forceinline__ void warp_product_rows(float (&acc)[D / 8][4], const uint32_t (&a)[4], const T* b_tile,
                                                  int kk, int lane) {
#pragma unroll
  for (int n = 0; n < D / 8; n += 2) {
    uint32_t b[4];
    ldmatrix<4, true>(b, b_tile + swizzled<D>(16 * kk + lane % 16, n + lane / 16));
    mma_m16n8k16<T>(acc[n], a, b);
    mma_m16n8k16<T>(acc[n + 1], a, b + 2);
  }
}

template <class T, int D, bool kAtomicDq>
__global__ __launch_bounds__(kThreads, 2) void dkdv_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse, const float* __restrict__ Dvec, float* __restrict__ dq_accum,
    T* __restrict__ dk, T* __restrict__ dv, int Nq, int Nk, int num_k_blocks, float scale, float scale_log2) {
  constexpr int kBq = dkdv_bq<D>();
  MINISORA_DYNAMIC_SMEM(smem);
  T* Ks = reinterpret_cast<T*>(smem);                        // (kBk, D) swizzled, the whole loop
  T* Vs = Ks + kBk * D;                                      // (kBk, D)
  T* Qs = Vs + kBk * D;                                      // (kBq, D) this step's queries
  T* dOs = Qs + kBq * D;                                     // (kBq, D)
  T* dSs = dOs + kBq * D;                                    // dS^T (kBk keys, kBq queries), swizzled
  float* lse_s = reinterpret_cast<float*>(dSs + kBk * kBq);  // lse in base 2, per query
  float* D_s = lse_s + kBq;

  const long long bh = blockIdx.x / num_k_blocks;
  const int k0 = (blockIdx.x % num_k_blocks) * kBk;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* qh = q + bh * Nq * D;
  const T* doh = dout + bh * Nq * D;
  load_tile_async<T, D, kBk, kThreads>(Ks, k + bh * Nk * D, k0, Nk);
  load_tile_async<T, D, kBk, kThreads>(Vs, v + bh * Nk * D, k0, Nk);
  cp_async_commit();

  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  for (int q0 = 0; q0 < Nq; q0 += kBq) {
    __syncthreads();  // every reader of the previous step's Qs, dOs, dSs is done
    load_tile_async<T, D, kBq, kThreads>(Qs, qh, q0, Nq);
    load_tile_async<T, D, kBq, kThreads>(dOs, doh, q0, Nq);
    cp_async_commit();
    for (int i = threadIdx.x; i < kBq; i += kThreads) {
      const bool valid = q0 + i < Nq;
      lse_s[i] = valid ? lse[bh * Nq + q0 + i] * kLog2e : INFINITY;  // queries past Nq: P = 0
      D_s[i] = valid ? Dvec[bh * Nq + q0 + i] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();

    // S^T = K Q^T, then dP^T = V dO^T, for the warp's 16 keys x kBq queries, two k-steps per round
    // (one product at a time: fewer A fragments live at once keeps d = 128 from spilling).
    float st[kBq / 8][4] = {}, dpt[kBq / 8][4] = {};
    warp_product_t<T, D, kBq>(st, Ks, Qs, warp, lane);
    warp_product_t<T, D, kBq>(dpt, Vs, dOs, warp, lane);
    // P^T = 2^(S^T scale log2(e) - lse log2(e)); dS^T = P^T (dP^T - D). Keys past Nk get P = 0.
#pragma unroll
    for (int n = 0; n < kBq / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int qi = 8 * n + 2 * t + i % 2;
        const bool key_valid = k0 + 16 * warp + g + 8 * (i / 2) < Nk;
        const float p = key_valid ? exp2f(fmaf(st[n][i], scale_log2, -lse_s[qi])) : 0.f;
        st[n][i] = p;
        dpt[n][i] = p * (dpt[n][i] - D_s[qi]);
      }
    // dV += P^T dO and dK += dS^T Q: A from registers, B = rows of dO / Q through ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < kBq / 16; ++kk) {
      uint32_t pa[4], dsa[4];
      p_fragment<T>(st, kk, pa);
      p_fragment<T>(dpt, kk, dsa);
      warp_product_rows<T, D>(dv_acc, pa, dOs, kk, lane);
      warp_product_rows<T, D>(dk_acc, dsa, Qs, kk, lane);
    }
    if constexpr (kAtomicDq) {
      // dS^T to shared memory: each n-tile of 8 queries is one 16-byte chunk of a key row.
#pragma unroll
      for (int n = 0; n < kBq / 8; ++n)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          *reinterpret_cast<uint32_t*>(dSs + swizzled<kBq>(16 * warp + g + 8 * h, n) + 2 * t) =
              pack2<T>(dpt[n][2 * h], dpt[n][2 * h + 1]);
      __syncthreads();
      // dQ[q0 + r0 .., c0 ..] += scale dS K: warp -> 16 query rows x kCols columns.
      constexpr int kRowGroups = kBq / 16, kColSplit = kWarps / kRowGroups, kCols = D / kColSplit;
      const int r0 = 16 * (warp % kRowGroups), c0 = kCols * (warp / kRowGroups);
      float acc[kCols / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kBk / 16; ++kk) {
        // A(query, key) = dS^T(key, query): matrix i = lane / 8 covers keys 8 (i / 2).., queries 8 (i % 2)..
        uint32_t a[4];
        const int i = lane / 8;
        ldmatrix<4, true>(a, dSs + swizzled<kBq>(16 * kk + lane % 8 + 8 * (i / 2), r0 / 8 + i % 2));
#pragma unroll
        for (int n = 0; n < kCols / 8; n += 2) {
          uint32_t b[4];
          ldmatrix<4, true>(b, Ks + swizzled<D>(16 * kk + lane % 16, c0 / 8 + n + lane / 16));
          mma_m16n8k16<T>(acc[n], a, b);
          mma_m16n8k16<T>(acc[n + 1], a, b + 2);
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = q0 + r0 + g + 8 * h;
        if (row < Nq) {
          float* dst = dq_accum + (bh * Nq + row) * D + c0 + 2 * t;
#pragma unroll
          for (int n = 0; n < kCols / 8; ++n) {
            atomicAdd(dst + 8 * n, acc[n][2 * h] * scale);
            atomicAdd(dst + 8 * n + 1, acc[n][2 * h + 1] * scale);
          }
        }
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int key = k0 + 16 * warp + g + 8 * h;
    if (key < Nk) {
      const long long row = (bh * Nk + key) * D + 2 * t;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        *reinterpret_cast<uint32_t*>(dk + row + 8 * n) = pack2<T>(dk_acc[n][2 * h] * scale, dk_acc[n][2 * h + 1] * scale);
        *reinterpret_cast<uint32_t*>(dv + row + 8 * n) = pack2<T>(dv_acc[n][2 * h], dv_acc[n][2 * h + 1]);
      }
    }
  }
}

template <class T, int D>
__global__ __launch_bounds__(kThreads, 2) void dq_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse, const float* __restrict__ Dvec, T* __restrict__ dq, int Nq, int Nk,
    int num_q_blocks, float scale, float scale_log2) {
  constexpr int kBkDq = dq_bk<D>();
  MINISORA_DYNAMIC_SMEM(smem);
  T* Qs = reinterpret_cast<T*>(smem);
  T* dOs = Qs + kBqDq * D;
  T* Ks = dOs + kBqDq * D;
  T* Vs = Ks + kBkDq * D;
  const long long bh = blockIdx.x / num_q_blocks;
  const int q0 = (blockIdx.x % num_q_blocks) * kBqDq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  load_tile_async<T, D, kBqDq, kThreads>(Qs, q + bh * Nq * D, q0, Nq);
  load_tile_async<T, D, kBqDq, kThreads>(dOs, dout + bh * Nq * D, q0, Nq);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4], dof[D / 16][4];  // the warp's 16 rows of Q and dO as A fragments
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    ldmatrix<4, false>(qf[kk], Qs + swizzled<D>(16 * warp + lane % 16, 2 * kk + lane / 16));
    ldmatrix<4, false>(dof[kk], dOs + swizzled<D>(16 * warp + lane % 16, 2 * kk + lane / 16));
  }
  float lse2[2], Drow[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = q0 + 16 * warp + g + 8 * h;
    lse2[h] = row < Nq ? lse[bh * Nq + row] * kLog2e : INFINITY;
    Drow[h] = row < Nq ? Dvec[bh * Nq + row] : 0.f;
  }
  float acc[D / 8][4] = {};
  for (int kb = 0; kb < Nk; kb += kBkDq) {
    __syncthreads();  // the previous tile's readers of Ks, Vs are done
    load_tile_async<T, D, kBkDq, kThreads>(Ks, k + bh * Nk * D, kb, Nk);
    load_tile_async<T, D, kBkDq, kThreads>(Vs, v + bh * Nk * D, kb, Nk);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float s[kBkDq / 8][4] = {}, dp[kBkDq / 8][4] = {};
#pragma unroll
    for (int n = 0; n < kBkDq / 8; ++n)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b[4];
        ldmatrix<4, false>(b, Ks + swizzled<D>(8 * n + lane % 8, 2 * kk + lane / 8));
        mma_m16n8k16<T>(s[n], qf[kk], b);
        mma_m16n8k16<T>(s[n], qf[kk + 1], b + 2);
        ldmatrix<4, false>(b, Vs + swizzled<D>(8 * n + lane % 8, 2 * kk + lane / 8));
        mma_m16n8k16<T>(dp[n], dof[kk], b);
        mma_m16n8k16<T>(dp[n], dof[kk + 1], b + 2);
      }
#pragma unroll
    for (int n = 0; n < kBkDq / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool key_valid = kb + 8 * n + 2 * t + i % 2 < Nk;
        const float p = key_valid ? exp2f(fmaf(s[n][i], scale_log2, -lse2[i / 2])) : 0.f;
        s[n][i] = p * (dp[n][i] - Drow[i / 2]);  // dS
      }
#pragma unroll
    for (int kk = 0; kk < kBkDq / 16; ++kk) {
      uint32_t a[4];
      p_fragment<T>(s, kk, a);
      warp_product_rows<T, D>(acc, a, Ks, kk, lane);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = q0 + 16 * warp + g + 8 * h;
    if (row < Nq) {
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(dq + (bh * Nq + row) * D + 8 * n + 2 * t) =
            pack2<T>(acc[n][2 * h] * scale, acc[n][2 * h + 1] * scale);
    }
  }
}

template <class T, int D>
cudaError_t launch(const T* dout, const T* q, const T* k, const T* v, const float* lse, const float* Dvec,
                   float* dq_accum, T* dq, T* dk, T* dv, int BH, int Nq, int Nk, float scale, bool deterministic,
                   cudaStream_t stream) {
  const float scale_log2 = scale * kLog2e;
  const int num_k_blocks = ceil_div(Nk, kBk);
  auto dkdv = deterministic ? dkdv_kernel<T, D, false> : dkdv_kernel<T, D, true>;
  constexpr size_t kDkdvBytes = dkdv_smem_bytes<T, D>(), kDqBytes = dq_smem_bytes<T, D>();
  cudaError_t err = cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kDkdvBytes);
  if (err != cudaSuccess) return err;
  MINISORA_LAUNCH_SMEM(dkdv, dim3((unsigned)(BH * (long long)num_k_blocks)), dim3(kThreads), kDkdvBytes, stream,
                       q, k, v, dout, lse, Dvec, dq_accum, dk, dv, Nq, Nk, num_k_blocks, scale, scale_log2);
  if ((err = cudaGetLastError()) != cudaSuccess || !deterministic) return err;
  const int num_q_blocks = ceil_div(Nq, kBqDq);
  auto dqk = dq_kernel<T, D>;
  if ((err = cudaFuncSetAttribute(dqk, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kDqBytes)) != cudaSuccess)
    return err;
  MINISORA_LAUNCH_SMEM(dqk, dim3((unsigned)(BH * (long long)num_q_blocks)), dim3(kThreads), kDqBytes, stream,
                       q, k, v, dout, lse, Dvec, dq, Nq, Nk, num_q_blocks, scale, scale_log2);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t flash_backward_mma(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                               const float* Dvec, float* dq_accum, T* dq, T* dk, T* dv, int BH, int Nq, int Nk,
                               int d, float scale, bool deterministic, cudaStream_t stream) {
  switch (d) {
    case 32: return launch<T, 32>(dout, q, k, v, lse, Dvec, dq_accum, dq, dk, dv, BH, Nq, Nk, scale, deterministic, stream);
    case 64: return launch<T, 64>(dout, q, k, v, lse, Dvec, dq_accum, dq, dk, dv, BH, Nq, Nk, scale, deterministic, stream);
    case 128: return launch<T, 128>(dout, q, k, v, lse, Dvec, dq_accum, dq, dk, dv, BH, Nq, Nk, scale, deterministic, stream);
  }
  return cudaErrorInvalidValue;  // launchers.cu checks d first
}

#define MINISORA_INSTANTIATE(T)                                                                              \
  template cudaError_t flash_backward_mma<T>(const T*, const T*, const T*, const T*, const float*, const float*, \
                                             float*, T*, T*, T*, int, int, int, int, float, bool, cudaStream_t);
MINISORA_INSTANTIATE(__half)
MINISORA_INSTANTIATE(__nv_bfloat16)
#undef MINISORA_INSTANTIATE

}  // namespace minisora
