// attn_bwd.cu -- FlashAttention-2 backward pass: the entry point, and the fp32 path on CUDA cores.
//
// flash_backward computes D, then runs the tensor-core kernels of attn_bwd_mma.cu for fp16 (sm_75+)
// and bf16 (sm_80+), or the CUDA-core kernels below for fp32 (and bf16 on sm_75). Tri Dao,
// FlashAttention-2, arXiv:2307.08691, Algorithm 2.
//
// With P = softmax(scale * Q K^T) and O = P V, the gradients are
//   dV = P^T dO         dP = dO V^T         dS = P o (dP - D),  D_i = rowsum(dO_i o O_i)
//   dQ = scale * dS K   dK = scale * dS^T Q
// (D_i equals sum_j P_ij dP_ij, which is what the softmax Jacobian needs; computing it from dO and O
// costs O(N d) instead of O(N^2)). Nothing N x N is stored: P is recomputed tile by tile from the
// forward's lse as P = exp(scale * q.k - lse).
//
// Kernels here:
//  1. preprocess: D = rowsum(dO o O), one warp per query row (shuffle reduction).
//  2. main, FA2 order: a block owns kB keys (kB = 32, or 16 for d = 128), keeps their K and V tiles
//     in shared memory and their dK, dV rows in registers, and loops over all query tiles: load Q, dO,
//     lse, D; recompute P and dS for the kB x kB tile; accumulate dV += P^T dO and dK += dS^T Q; add
//     this key block's share of dQ = dS K into an fp32 accumulator in global memory with atomicAdd
//     (several key blocks update the same dQ rows concurrently). Each key row is served by 128 / kB
//     threads that split its columns; for the dQ product the same thread serves the query row of the
//     same index. Shared rows are padded (+1 float) against bank conflicts, as in stage 1.
//  3. convert: dQ accumulator (fp32) -> dq in the input dtype.
//  Deterministic mode (no atomics, bit-reproducible): 2 skips dQ and dq_simt_kernel, one block per kB
//  queries looping over the key tiles, computes dQ on its own (P and dS recomputed once more).
// The workspace (fp32) holds D (BH*Nq) followed, unless deterministic, by the dQ accumulator (BH*Nq*d).
//
// Precision: 16-bit inputs are converted to fp32 on load and all products are fp32 FMAs.
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_80 -c attn_bwd.cu -o /tmp/attn_bwd.o
#include "common.cuh"

namespace minisora {
namespace {

constexpr int kThreads = 128;

template <class T>
__global__ void preprocess_kernel(const T* __restrict__ dout, const T* __restrict__ out, float* __restrict__ Dvec,
                                  long long rows, int d) {
  const int lane = threadIdx.x % 32, warps_per_block = blockDim.x / 32;
  for (long long row = (long long)blockIdx.x * warps_per_block + threadIdx.x / 32; row < rows;
       row += (long long)gridDim.x * warps_per_block) {  // warp-uniform loop
    float acc = 0.f;
    for (int c = lane; c < d; c += 32) acc += to_float(dout[row * d + c]) * to_float(out[row * d + c]);
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) Dvec[row] = acc;
  }
}

template <class T, int D, bool kAtomicDq>
__global__ __launch_bounds__(kThreads) void backward_kernel(
    const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ Dvec, float* __restrict__ dq_accum,
    T* __restrict__ dk, T* __restrict__ dv, int Nq, int Nk, int num_k_blocks, float scale) {
  constexpr int kB = D == 128 ? 16 : 32;        // keys per block = queries per tile
  constexpr int kTPR = kThreads / kB;           // threads per row (4 or 8)
  constexpr int kCols = D / kTPR;               // columns of dK/dV/dQ per thread
  constexpr int kQueries = kB / kTPR;           // P/dS entries per thread and tile
  __shared__ float Ks[kB][D + 1], Vs[kB][D + 1], Qs[kB][D + 1], dOs[kB][D + 1];
  __shared__ float Ps[kB][kB + 1], dSs[kB][kB + 1];
  __shared__ float lse_s[kB], D_s[kB];

  const long long bh = blockIdx.x / num_k_blocks;
  const int k0 = (blockIdx.x % num_k_blocks) * kB;
  const int tid = threadIdx.x, r = tid / kTPR, c = tid % kTPR;
  const T* qh = q + bh * Nq * D;
  const T* doh = dout + bh * Nq * D;

  for (int idx = tid; idx < kB * D; idx += kThreads) {
    const int row = idx / D, col = idx % D;
    const bool valid = k0 + row < Nk;
    Ks[row][col] = valid ? to_float(k[(bh * Nk + k0 + row) * D + col]) : 0.f;
    Vs[row][col] = valid ? to_float(v[(bh * Nk + k0 + row) * D + col]) : 0.f;
  }
  float dk_acc[kCols] = {}, dv_acc[kCols] = {};
  const bool key_valid = k0 + r < Nk;

  for (int q0 = 0; q0 < Nq; q0 += kB) {
    __syncthreads();  // the previous query tile is fully consumed (first time: Ks/Vs are written)
    for (int idx = tid; idx < kB * D; idx += kThreads) {
      const int row = idx / D, col = idx % D;
      const bool valid = q0 + row < Nq;
      Qs[row][col] = valid ? to_float(qh[(long long)(q0 + row) * D + col]) : 0.f;
      dOs[row][col] = valid ? to_float(doh[(long long)(q0 + row) * D + col]) : 0.f;
    }
    if (tid < kB) {  // a query past Nq gets lse = +inf, hence P = 0 and dS = 0
      lse_s[tid] = q0 + tid < Nq ? lse[bh * Nq + q0 + tid] : INFINITY;
      D_s[tid] = q0 + tid < Nq ? Dvec[bh * Nq + q0 + tid] : 0.f;
    }
    __syncthreads();

    // Key r, queries i = c + kTPR * j: recompute s = q.k and dp = dO.v, then P and dS.
    float s[kQueries] = {}, dp[kQueries] = {};
#pragma unroll 4
    for (int kk = 0; kk < D; ++kk) {
      const float kv = Ks[r][kk], vv = Vs[r][kk];
#pragma unroll
      for (int j = 0; j < kQueries; ++j) {
        s[j] += Qs[c + kTPR * j][kk] * kv;
        dp[j] += dOs[c + kTPR * j][kk] * vv;
      }
    }
#pragma unroll
    for (int j = 0; j < kQueries; ++j) {
      const int i = c + kTPR * j;
      const float p = key_valid ? expf(s[j] * scale - lse_s[i]) : 0.f;
      Ps[r][i] = p;
      dSs[r][i] = p * (dp[j] - D_s[i]);
    }
    __syncthreads();

    // dV[r] += sum_i P[r][i] dO[i];  dK[r] += sum_i dS[r][i] Q[i]  (scale applied once at the end)
#pragma unroll 4
    for (int i = 0; i < kB; ++i) {
      const float p = Ps[r][i], ds = dSs[r][i];
#pragma unroll
      for (int x = 0; x < kCols; ++x) {
        dv_acc[x] += p * dOs[i][c + kTPR * x];
        dk_acc[x] += ds * Qs[i][c + kTPR * x];
      }
    }
    // dQ[i] += scale * sum_key dS[key][i] K[key], with this thread serving query row i = r.
    if (kAtomicDq && q0 + r < Nq) {
      float* dq_row = dq_accum + (bh * Nq + q0 + r) * D;
#pragma unroll
      for (int x = 0; x < kCols; ++x) {
        float acc = 0.f;
#pragma unroll 4
        for (int key = 0; key < kB; ++key) acc += dSs[key][r] * Ks[key][c + kTPR * x];
        atomicAdd(dq_row + c + kTPR * x, acc * scale);
      }
    }
  }

  if (key_valid) {
    const long long row = (bh * Nk + k0 + r) * D;
#pragma unroll
    for (int x = 0; x < kCols; ++x) {
      dk[row + c + kTPR * x] = from_float<T>(dk_acc[x] * scale);
      dv[row + c + kTPR * x] = from_float<T>(dv_acc[x]);
    }
  }
}

// Deterministic dQ: a block owns kB queries (thread row r = query, as the keys above), loops over the
// key tiles, recomputes P and dS, and accumulates dQ[r] = scale sum_key dS[r][key] K[key] in registers.
template <class T, int D>
__global__ __launch_bounds__(kThreads) void dq_simt_kernel(
    const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ Dvec, T* __restrict__ dq, int Nq, int Nk,
    int num_q_blocks, float scale) {
  constexpr int kB = D == 128 ? 16 : 32, kTPR = kThreads / kB, kCols = D / kTPR, kKeys = kB / kTPR;
  __shared__ float Qs[kB][D + 1], dOs[kB][D + 1], Ks[kB][D + 1], Vs[kB][D + 1], dSs[kB][kB + 1];
  const long long bh = blockIdx.x / num_q_blocks;
  const int q0 = (blockIdx.x % num_q_blocks) * kB;
  const int tid = threadIdx.x, r = tid / kTPR, c = tid % kTPR;
  for (int idx = tid; idx < kB * D; idx += kThreads) {
    const int row = idx / D, col = idx % D;
    const bool valid = q0 + row < Nq;
    Qs[row][col] = valid ? to_float(q[(bh * Nq + q0 + row) * D + col]) : 0.f;
    dOs[row][col] = valid ? to_float(dout[(bh * Nq + q0 + row) * D + col]) : 0.f;
  }
  const bool row_valid = q0 + r < Nq;
  const float lse_r = row_valid ? lse[bh * Nq + q0 + r] : INFINITY, D_r = row_valid ? Dvec[bh * Nq + q0 + r] : 0.f;
  float acc[kCols] = {};
  for (int k0 = 0; k0 < Nk; k0 += kB) {
    __syncthreads();  // the previous key tile is fully consumed (first time: Qs/dOs are written)
    for (int idx = tid; idx < kB * D; idx += kThreads) {
      const int row = idx / D, col = idx % D;
      const bool valid = k0 + row < Nk;
      Ks[row][col] = valid ? to_float(k[(bh * Nk + k0 + row) * D + col]) : 0.f;
      Vs[row][col] = valid ? to_float(v[(bh * Nk + k0 + row) * D + col]) : 0.f;
    }
    __syncthreads();
    float s[kKeys] = {}, dp[kKeys] = {};
#pragma unroll 4
    for (int kk = 0; kk < D; ++kk) {
      const float qv = Qs[r][kk], dov = dOs[r][kk];
#pragma unroll
      for (int j = 0; j < kKeys; ++j) {
        s[j] += qv * Ks[c + kTPR * j][kk];
        dp[j] += dov * Vs[c + kTPR * j][kk];
      }
    }
#pragma unroll
    for (int j = 0; j < kKeys; ++j) {
      const int key = c + kTPR * j;
      const float p = k0 + key < Nk ? expf(s[j] * scale - lse_r) : 0.f;
      dSs[r][key] = p * (dp[j] - D_r);
    }
    __syncthreads();
#pragma unroll 4
    for (int key = 0; key < kB; ++key) {
      const float ds = dSs[r][key];
#pragma unroll
      for (int x = 0; x < kCols; ++x) acc[x] += ds * Ks[key][c + kTPR * x];
    }
  }
  if (row_valid) {
#pragma unroll
    for (int x = 0; x < kCols; ++x) dq[(bh * Nq + q0 + r) * D + c + kTPR * x] = from_float<T>(acc[x] * scale);
  }
}

template <class T>
__global__ void convert_kernel(const float* __restrict__ src, T* __restrict__ dst, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] = from_float<T>(src[i]);
}

unsigned grid_for(long long total) {
  return (unsigned)std::min<long long>((total + kThreads - 1) / kThreads, 1 << 16);
}

template <class T, int D>
cudaError_t launch_simt(const T* dout, const T* q, const T* k, const T* v, const float* lse, const float* Dvec,
                        float* dq_accum, T* dq, T* dk, T* dv, int BH, int Nq, int Nk, float scale, bool deterministic,
                        cudaStream_t stream) {
  constexpr int kB = D == 128 ? 16 : 32;  // must match backward_kernel and dq_simt_kernel
  const int num_k_blocks = ceil_div(Nk, kB), num_q_blocks = ceil_div(Nq, kB);
  auto kernel = deterministic ? backward_kernel<T, D, false> : backward_kernel<T, D, true>;
  MINISORA_LAUNCH(kernel, dim3((unsigned)(BH * (long long)num_k_blocks)), dim3(kThreads), stream,
                  dout, q, k, v, lse, Dvec, dq_accum, dk, dv, Nq, Nk, num_k_blocks, scale);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || !deterministic) return err;
  auto dq_kernel = dq_simt_kernel<T, D>;
  MINISORA_LAUNCH(dq_kernel, dim3((unsigned)(BH * (long long)num_q_blocks)), dim3(kThreads), stream,
                  dout, q, k, v, lse, Dvec, dq, Nq, Nk, num_q_blocks, scale);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t flash_backward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                           const float* lse, T* dq, T* dk, T* dv, float* workspace,
                           int BH, int Nq, int Nk, int d, float scale, bool deterministic, bool tensor_cores,
                           cudaStream_t stream) {
  const long long rows = (long long)BH * Nq;
  float* Dvec = workspace;
  float* dq_accum = deterministic ? nullptr : workspace + rows;
  cudaError_t err = cudaSuccess;
  if (!deterministic && (err = cudaMemsetAsync(dq_accum, 0, sizeof(float) * rows * d, stream)) != cudaSuccess)
    return err;
  auto pre = preprocess_kernel<T>;
  MINISORA_LAUNCH(pre, dim3(grid_for(rows * 32)), dim3(kThreads), stream, dout, out, Dvec, rows, d);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if constexpr (!std::is_same<T, float>::value) {
    if (tensor_cores)
      err = flash_backward_mma<T>(dout, q, k, v, lse, Dvec, dq_accum, dq, dk, dv, BH, Nq, Nk, d, scale,
                                  deterministic, stream);
  }
  if (std::is_same<T, float>::value || !tensor_cores) {
    auto launch = d == 32 ? launch_simt<T, 32> : d == 64 ? launch_simt<T, 64> : launch_simt<T, 128>;
    err = launch(dout, q, k, v, lse, Dvec, dq_accum, dq, dk, dv, BH, Nq, Nk, scale, deterministic, stream);
  }
  if (err != cudaSuccess || deterministic) return err;
  auto convert = convert_kernel<T>;
  MINISORA_LAUNCH(convert, dim3(grid_for(rows * d)), dim3(kThreads), stream, dq_accum, dq, rows * d);
  return cudaGetLastError();
}

#define MINISORA_INSTANTIATE(T)                                                                            \
  template cudaError_t flash_backward<T>(const T*, const T*, const T*, const T*, const T*, const float*, T*, \
                                         T*, T*, float*, int, int, int, int, float, bool, bool, cudaStream_t);
MINISORA_INSTANTIATE(float)
MINISORA_INSTANTIATE(__half)
MINISORA_INSTANTIATE(__nv_bfloat16)
#undef MINISORA_INSTANTIATE

}  // namespace minisora
