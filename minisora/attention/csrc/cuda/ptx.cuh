// ptx.cuh -- thin wrappers over the warp-level instructions the tensor-core stages use:
// mma.sync (tensor-core matrix multiply-accumulate), ldmatrix (shared memory -> mma fragments) and
// cp.async (global -> shared copies that bypass registers, sm_80+).
//
// Each wrapper is inline PTX when compiled by nvcc for a GPU (__CUDA_ARCH__ defined) and a call into
// the host emulation under MINISORA_EMU (g++), so the kernels that call them are the same source in
// both builds. (nvcc's host pass sees neither and gets an empty body: these are never called on the host.)
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"; g = lane / 4, t = lane % 4). Every
// 32-bit register holds two 16-bit values, the lower column/row index in the low half:
//   A (16x16, row-major) a[0]: row g,   cols 2t..2t+1      a[1]: row g+8, cols 2t..2t+1
//                        a[2]: row g,   cols 2t+8..2t+9    a[3]: row g+8, cols 2t+8..2t+9
//   B (16x8, "col")      b[0]: rows 2t..2t+1, col g        b[1]: rows 2t+8..2t+9, col g
//   C/D (16x8, float)    c[0], c[1]: row g, cols 2t, 2t+1  c[2], c[3]: row g+8, cols 2t, 2t+1
// m16n8k8 (the only fp16 shape on sm_75) uses exactly the first half of these: A = {a[0], a[1]},
// B = {b[0]}. So one m16n8k16 equals two m16n8k8 -- ({a[0], a[1]}, b[0]) then ({a[2], a[3]}, b[1]) --
// and the kernels are written once, in m16n8k16 fragments, for every architecture.
#pragma once
#include "common.cuh"

namespace minisora {

// d += A * B for one warp, fp16 or bf16 inputs, fp32 accumulators.
// sm_80+: one mma.m16n8k16. sm_75: two mma.m16n8k8 (fp16 only -- bf16 tensor cores start at sm_80;
// the launchers never run a bf16 tensor-core kernel there, so that path traps).
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  constexpr bool kHalf = std::is_same<T, __half>::value;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kHalf)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
  if constexpr (kHalf) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]));
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[2]), "r"(a[3]), "r"(b[1]));
  } else {
    __trap();
  }
#elif defined(MINISORA_EMU)
  if (cuda_emu::config().arch >= 80) {
    cuda_emu::mma<T, 16>(d, a, b, d);
  } else if constexpr (kHalf) {
    cuda_emu::mma<T, 8>(d, a, b, d);
    cuda_emu::mma<T, 8>(d, a + 2, b + 1, d);
  } else {
    __trap();
  }
#endif
}

// The raw m16n8k8 fp16 instruction (d += A * B, A = 2 registers, B = 1), for the emulator's layout test.
__device__ __forceinline__ void mma_m16n8k8_f16(float d[4], const uint32_t a[2], const uint32_t b[1]) {
#if defined(__CUDA_ARCH__)
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(b[0]));
#elif defined(MINISORA_EMU)
  cuda_emu::mma<__half, 8>(d, a, b, d);
#endif
}

// ldmatrix.sync.aligned.m8n8.x{N}{.trans}.shared.b16: loads N 8x8 matrices of 16-bit values from shared
// memory straight into mma fragments. Lanes 8i..8i+7 pass the addresses of rows 0..7 of matrix i
// (each row: 8 contiguous values, 16-byte aligned). Register i of lane l receives row l/4, columns
// 2(l%4) and 2(l%4)+1 of matrix i -- the A/B fragment layout above; with kTrans, of the transposed
// matrix (rows 2(l%4), 2(l%4)+1 of column l/4), which turns a row-major V tile into a B fragment.
template <int N, bool kTrans>
__device__ __forceinline__ void ldmatrix(uint32_t r[N], const void* smem_row) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(__CUDA_ARCH__)
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  if constexpr (N == 1 && !kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(addr));
  else if constexpr (N == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(addr));
  else if constexpr (N == 2 && !kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
  else if constexpr (N == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
  else if constexpr (!kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
#elif defined(MINISORA_EMU)
  cuda_emu::ldmatrix(r, N, kTrans, smem_row);
#endif
}

// cp.async.cg.shared.global, 16 bytes: an asynchronous global -> shared copy (sm_80+). When !valid no
// byte is read and the destination is zero-filled (used for the rows past N). On sm_75 it is an
// ordinary synchronous 16-byte load and store, so the same double-buffered loop still works there.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* global_src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(global_src), "r"(valid ? 16 : 0));
#elif defined(__CUDA_ARCH__)
  *static_cast<uint4*>(smem_dst) = valid ? *static_cast<const uint4*>(global_src) : make_uint4(0, 0, 0, 0);
#elif defined(MINISORA_EMU)
  cuda_emu::cp_async_16(smem_dst, global_src, valid ? 16 : 0);
#endif
}
// Closes the group of cp.async issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;");
#elif defined(MINISORA_EMU)
  cuda_emu::cp_async_commit();
#endif
}
// Waits until at most kPending committed groups are still in flight (groups complete in order).
// It only covers this thread's copies: a __syncthreads must follow before other threads read them.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
#elif defined(MINISORA_EMU)
  cuda_emu::cp_async_wait(kPending);
#endif
}

}  // namespace minisora
