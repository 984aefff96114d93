// launchers.h -- the torch-free C interface to minisora's CUDA attention kernels.
//
// Everything here takes raw device pointers, sizes and a stream, so the .cu files compile with nvcc
// alone (no torch headers: seconds instead of minutes) and the C++ binding that owns the torch side
// only has to pass tensor pointers through. No function here aborts or throws: each returns a code.
//
// Tensors (all contiguous, row-major, on the current device, in the element type `dtype`):
//   q    (B, H, Nq, d)      k, v (B, H, Nk, d)      out (B, H, Nq, d)      dout, dq (like q)
//   dk, dv (like k)         lse (B, H, Nq) float32, always float32 whatever `dtype` is.
// out = softmax(scale * q k^T) v, and lse[b,h,i] = log(sum_j exp(scale * q_i . k_j)) with the NATURAL
// logarithm -- the backward pass recomputes P = exp(scale * q k^T - lse) from it.
// Sizes: B, H, Nq >= 0 (zero means nothing to do), Nk >= 1 when Nq > 0, d in {32, 64, 128}.
// Any Nq and Nk (they may differ); tails of the tiles are masked inside the kernels.
//
// Stages of the forward pass (the teaching sequence; every stage stays callable for the benchmark):
//   0  naive: materialise S = scale q k^T in `workspace` (B*H*Nq*Nk float32), softmax it, multiply by v
//   1  fused FA1-style online softmax on CUDA cores, fp32 math (fp16/bf16 inputs converted on load)
//   2  FA2 loop order on tensor cores (mma.sync), fp16 from sm_75, bf16 from sm_80
//   3  stage 2 + XOR-swizzled shared memory + ldmatrix (+ cp.async double buffering on sm_80+)
//  -1  the best stage for (dtype, d, device): 3 for fp16 (and for bf16 on sm_80+), otherwise 1.
//      If a pointer is not 16-byte aligned, or scale <= 0, -1 quietly uses stage 1 instead of 2/3.
// Stages 2 and 3 need fp16/bf16 and 16-byte aligned q, k, v, out (tensor views with a storage offset
// may not be; an explicit stage 2/3 then returns MINISORA_ERR_ALIGNMENT).
//
// Backward: FlashAttention-2 (D = rowsum(dout * out), P recomputed from lse, dK/dV per key block,
// dQ accumulated in the float32 `workspace` with one atomicAdd per element and key block, converted at
// the end). fp16 (sm_75+) and bf16 (sm_80+) run on tensor cores (attn_bwd_mma.cu), fp32 on CUDA cores.
// deterministic != 0: no atomics -- dQ gets its own pass (one block per query tile over all keys), so
// the result is bit-reproducible run to run; it costs recomputing S and dP once more.
//
// Return value: 0 on success; a positive cudaError_t from the CUDA runtime (e.g. a launch failure);
// or one of the negative MINISORA_ERR_* codes below. minisora_attn_error_string(code) explains any code.
// Kernels are queued on `stream` (a cudaStream_t, NULL = the legacy default stream); the functions
// return without synchronising, so asynchronous kernel faults surface at the caller's next sync.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum minisora_dtype { MINISORA_F32 = 0, MINISORA_F16 = 1, MINISORA_BF16 = 2 };

enum minisora_error {
  MINISORA_OK = 0,
  MINISORA_ERR_DTYPE = -1,      // dtype is not one of minisora_dtype
  MINISORA_ERR_STAGE = -2,      // stage not in {-1, 0, 1, 2, 3}, or stage 2/3 asked for float32 or scale <= 0
  MINISORA_ERR_HEAD_DIM = -3,   // d is not 32, 64 or 128
  MINISORA_ERR_ARCH = -4,       // the current GPU is too old for this dtype/stage (bf16 mma needs sm_80)
  MINISORA_ERR_SHAPE = -5,      // a negative size, or Nk == 0 with Nq > 0
  MINISORA_ERR_ALIGNMENT = -6,  // stage 2/3 given a pointer that is not 16-byte aligned
  MINISORA_ERR_WORKSPACE = -7,  // workspace is NULL but the call needs one
  MINISORA_ERR_NULL = -8,       // a tensor pointer is NULL although its size is not zero
};

// Forward. `workspace` is used only by stage 0 (size from minisora_attn_fwd_workspace_bytes, which
// returns 0 for the other stages; NULL is fine then). lse may not be NULL.
int minisora_attn_fwd(int dtype, int stage, const void* q, const void* k, const void* v, void* out,
                      float* lse, void* workspace, int B, int H, int Nq, int Nk, int d, float scale,
                      void* stream);
size_t minisora_attn_fwd_workspace_bytes(int dtype, int stage, int B, int H, int Nq, int Nk, int d);

// Which stage minisora_attn_fwd(dtype, stage, ...) would run on the current device for aligned
// pointers: the stage itself (-1 resolved), or a negative MINISORA_ERR_* code if it cannot.
int minisora_attn_fwd_stage(int dtype, int stage, int d);

// Backward: writes dq, dk, dv (all three; they need not be zeroed). `out` and `lse` are the forward's.
// `workspace` must hold minisora_attn_bwd_workspace_bytes(...) bytes (float32, 4-byte aligned);
// it is overwritten (zeroed on the stream first), so one buffer can serve consecutive calls on a stream.
int minisora_attn_bwd(int dtype, const void* dout, const void* q, const void* k, const void* v,
                      const void* out, const float* lse, void* dq, void* dk, void* dv,
                      float* workspace, int B, int H, int Nq, int Nk, int d, float scale, int deterministic,
                      void* stream);
size_t minisora_attn_bwd_workspace_bytes(int dtype, int B, int H, int Nq, int Nk, int d, int deterministic);

// A static, human-readable explanation of any return code above (never NULL).
const char* minisora_attn_error_string(int code);

#ifdef __cplusplus
}
#endif
