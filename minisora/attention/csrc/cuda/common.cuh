// common.cuh -- what every kernel file shares: the CUDA (or emulation) headers, the launch macro,
// element-type conversions, and the host entry points of each stage file (called by launchers.cu).
//
// Compiled two ways from the same source:
//   nvcc ...                      real CUDA: <cuda_runtime.h>, kernel<<<grid, block, 0, stream>>>(...)
//   g++ -x c++ -DMINISORA_EMU -I tests/cuda_emu ...   the host emulation (tests/cuda_emu/cuda_emu.h)
//                                 runs each block's threads on the CPU (tests/test_cuda_kernels.py).
#pragma once
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <type_traits>

// MINISORA_LAUNCH_SMEM launches with `smem` bytes of dynamic shared memory, which the kernel reaches
// through MINISORA_DYNAMIC_SMEM(name) (an `extern __shared__` array on a GPU, a poisoned per-block
// buffer under emulation). Above 48 KB the launcher must first raise the kernel's limit with
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
#ifdef MINISORA_EMU
#include "cuda_emu.h"  // tests/cuda_emu/: the host emulation lives with the tests
#define MINISORA_LAUNCH(kernel, grid, block, stream, ...) \
  cuda_emu::launch(kernel, grid, block, 0, stream, __VA_ARGS__)
#define MINISORA_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...) \
  cuda_emu::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
#define MINISORA_DYNAMIC_SMEM(name) unsigned char* name = cuda_emu::dynamic_shared_memory()
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define MINISORA_LAUNCH(kernel, grid, block, stream, ...) \
  kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#define MINISORA_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...) \
  kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define MINISORA_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#include "launchers.h"

namespace minisora {

constexpr float kLog2e = 1.4426950408889634f;  // softmax runs in base 2: exp(x) = exp2(x * log2(e))
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---- element types: float, __half, __nv_bfloat16; all arithmetic is done in float --------------
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two 16-bit values in one 32-bit register, `lo` in the low half: the operand format of mma.sync.
template <class T> __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const T l = from_float<T>(lo), h = from_float<T>(hi);
  uint16_t a, b;
  memcpy(&a, &l, 2);
  memcpy(&b, &h, 2);
  return (uint32_t)a | ((uint32_t)b << 16);
}
// The same for two values already in 16-bit format (no rounding).
template <class T> __device__ __forceinline__ uint32_t pack_bits(T lo, T hi) {
  uint16_t a, b;
  memcpy(&a, &lo, 2);
  memcpy(&b, &hi, 2);
  return (uint32_t)a | ((uint32_t)b << 16);
}

// ---- host entry points of the stage files (T = float, __half or __nv_bfloat16) -------------------
// Pointers are (BH, N, d) contiguous; lse (BH, Nq). Each returns the launch's cudaError_t.
template <class T>
cudaError_t naive_forward(const T* q, const T* k, const T* v, T* out, float* lse, float* scores,
                          int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream);
template <class T>
cudaError_t online_softmax_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                                   int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream);
template <class T>  // __half or __nv_bfloat16
cudaError_t fa2_mma_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                            int BH, int Nq, int Nk, int d, float scale, cudaStream_t stream);
template <class T>  // __half or __nv_bfloat16; arch picks the tile configuration (sm_75 or sm_80+)
cudaError_t swizzle_ldmatrix_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                                     int BH, int Nq, int Nk, int d, float scale, int arch, cudaStream_t stream);
// workspace: BH*Nq floats (D = rowsum(dO * O)) followed, unless deterministic, by BH*Nq*d floats (the dQ
// accumulator). tensor_cores: fp16/bf16 through attn_bwd_mma.cu (the caller checks the arch).
template <class T>
cudaError_t flash_backward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                           const float* lse, T* dq, T* dk, T* dv, float* workspace,
                           int BH, int Nq, int Nk, int d, float scale, bool deterministic, bool tensor_cores,
                           cudaStream_t stream);
template <class T>  // __half or __nv_bfloat16; dq_accum is used (and dq not) unless deterministic
cudaError_t flash_backward_mma(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                               const float* Dvec, float* dq_accum, T* dq, T* dk, T* dv, int BH, int Nq, int Nk,
                               int d, float scale, bool deterministic, cudaStream_t stream);

}  // namespace minisora
