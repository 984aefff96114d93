// attn_00_naive.cu -- stage 0: attention exactly as the formula reads, one kernel per step.
//
//   S = scale * Q K^T          (materialised: B*H*Nq*Nk floats in global memory)
//   P = softmax(S) row-wise    (in place; also writes lse = log sum exp of each row)
//   O = P V
//
// Every element of S is written to and read back from global memory (DRAM) twice, so the memory
// traffic and the footprint grow as N^2: at N = 16384 one head's S alone is 1 GiB. That is the baseline
// the next stages remove. Math is fp32; fp16/bf16 inputs are converted on load.
//
// Thread mapping: one thread per element of S and per element of O (grid-stride loops, 64-bit indices);
// one warp per row for the softmax (max and sum reduced with __shfl_xor_sync).
//
// Build alone (compile check):  nvcc -std=c++17 -O3 -arch=sm_80 -c attn_00_naive.cu -o /tmp/attn_00.o
// Everything, as a library:     see launchers.cu.
#include "common.cuh"

namespace minisora {
namespace {

constexpr int kThreads = 256;

// Enough blocks to cover `total` elements, capped: the grid-stride loops handle the rest.
unsigned grid_for(long long total) {
  return (unsigned)std::min<long long>((total + kThreads - 1) / kThreads, 1 << 16);
}

template <class T>
__global__ void scores_kernel(const T* __restrict__ q, const T* __restrict__ k, float* __restrict__ scores,
                              int BH, int Nq, int Nk, int d, float scale) {
  const long long total = (long long)BH * Nq * Nk;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const long long j = idx % Nk, row = idx / Nk;  // row = bh * Nq + i
    const long long bh = row / Nq;
    const T* qi = q + row * d;
    const T* kj = k + (bh * Nk + j) * d;
    float acc = 0.f;
    for (int c = 0; c < d; ++c) acc += to_float(qi[c]) * to_float(kj[c]);
    scores[idx] = acc * scale;
  }
}

// One warp per row of S: each lane strides over the row, then the warp combines its partial max/sum.
__global__ void softmax_kernel(float* __restrict__ scores, float* __restrict__ lse, long long rows, int Nk) {
  const int lane = threadIdx.x % 32, warps_per_block = blockDim.x / 32;
  for (long long row = (long long)blockIdx.x * warps_per_block + threadIdx.x / 32; row < rows;
       row += (long long)gridDim.x * warps_per_block) {  // warp-uniform: all lanes share `row`
    float* s = scores + row * Nk;
    float m = -INFINITY;
    for (int j = lane; j < Nk; j += 32) m = fmaxf(m, s[j]);
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float l = 0.f;
    for (int j = lane; j < Nk; j += 32) {
      const float p = expf(s[j] - m);
      s[j] = p;
      l += p;
    }
    for (int off = 16; off > 0; off /= 2) l += __shfl_xor_sync(0xffffffffu, l, off);
    const float inv_l = 1.f / l;
    for (int j = lane; j < Nk; j += 32) s[j] *= inv_l;
    if (lane == 0) lse[row] = m + logf(l);
  }
}

template <class T>
__global__ void pv_kernel(const float* __restrict__ probs, const T* __restrict__ v, T* __restrict__ out,
                          int BH, int Nq, int Nk, int d) {
  const long long total = (long long)BH * Nq * d;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const long long c = idx % d, row = idx / d;  // row = bh * Nq + i
    const long long bh = row / Nq;
    const float* p = probs + row * Nk;
    const T* vh = v + bh * Nk * d + c;
    float acc = 0.f;
    for (int j = 0; j < Nk; ++j) acc += p[j] * to_float(vh[(long long)j * d]);
    out[idx] = from_float<T>(acc);
  }
}

}  // namespace

template <class T>
cudaError_t naive_forward(const T* q, const T* k, const T* v, T* out, float* lse, float* scores,
                          int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream) {
  const long long rows = (long long)BH * Nq;
  auto scores_k = scores_kernel<T>;
  MINISORA_LAUNCH(scores_k, dim3(grid_for(rows * Nk)), dim3(kThreads), stream, q, k, scores, BH, Nq, Nk, d, scale);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  auto softmax_k = softmax_kernel;
  MINISORA_LAUNCH(softmax_k, dim3(grid_for(rows * 32)), dim3(kThreads), stream, scores, lse, rows, Nk);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  auto pv_k = pv_kernel<T>;
  MINISORA_LAUNCH(pv_k, dim3(grid_for(rows * d)), dim3(kThreads), stream, scores, v, out, BH, Nq, Nk, d);
  return cudaGetLastError();
}

template cudaError_t naive_forward<float>(const float*, const float*, const float*, float*, float*, float*,
                                          int, int, int, int, float, cudaStream_t);
template cudaError_t naive_forward<__half>(const __half*, const __half*, const __half*, __half*, float*, float*,
                                           int, int, int, int, float, cudaStream_t);
template cudaError_t naive_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                                  __nv_bfloat16*, float*, float*, int, int, int, int, float,
                                                  cudaStream_t);

}  // namespace minisora
