// launchers.cu -- the extern "C" functions of launchers.h: validate, pick a stage, dispatch on dtype
// and head dim (inside the stage files), launch on the caller's stream, and report errors as codes.
//
// Build the whole library (torch-free, seconds per architecture):
//   nvcc -std=c++17 -O3 -gencode arch=compute_75,code=sm_75 -gencode arch=compute_80,code=sm_80
//        -gencode arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared -o libminisora_attn_cuda.so *.cu
// sm_75 is the Colab T4 (fp16 tensor cores via m16n8k8), sm_80 covers A100/L4 (sm_86/89 run sm_80
// code), sm_90 the H100. Add -gencode arch=compute_90,code=compute_90 to embed PTX for newer GPUs.
#include "common.cuh"

namespace {
using namespace minisora;

bool is_tensor_core_stage(int stage) { return stage == 2 || stage == 3; }

int current_arch(int* arch) {
  int device = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  *arch = 10 * major + minor;
  return (int)err;
}

int check_sizes(int dtype, int B, int H, int Nq, int Nk, int d) {
  if (dtype != MINISORA_F32 && dtype != MINISORA_F16 && dtype != MINISORA_BF16) return MINISORA_ERR_DTYPE;
  if (d != 32 && d != 64 && d != 128) return MINISORA_ERR_HEAD_DIM;
  if (B < 0 || H < 0 || Nq < 0 || Nk < 0 || (Nk == 0 && Nq > 0)) return MINISORA_ERR_SHAPE;
  // Blocks are numbered (batch*head, row block) in one grid dimension, and the stage functions take
  // B*H as an int: keep both within 2^31 - 1 (rows per block >= 16 everywhere).
  if ((long long)B * H * ceil_div(Nq, 16) > 0x7fffffffLL || (long long)B * H * ceil_div(Nk, 16) > 0x7fffffffLL)
    return MINISORA_ERR_SHAPE;
  return MINISORA_OK;
}

// The stage that runs for (dtype, requested stage) on `arch`, or a negative error code.
int resolve_stage(int dtype, int stage, int arch) {
  if (arch < 75) return MINISORA_ERR_ARCH;
  if (stage == -1) return dtype == MINISORA_F16 || (dtype == MINISORA_BF16 && arch >= 80) ? 3 : 1;
  if (stage < 0 || stage > 3) return MINISORA_ERR_STAGE;
  if (is_tensor_core_stage(stage) && dtype == MINISORA_F32) return MINISORA_ERR_STAGE;
  if (is_tensor_core_stage(stage) && dtype == MINISORA_BF16 && arch < 80) return MINISORA_ERR_ARCH;
  return stage;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T>
cudaError_t forward_typed(int stage, const void* q, const void* k, const void* v, void* out, float* lse,
                          void* workspace, int BH, int Nq, int Nk, int d, float scale, int arch,
                          cudaStream_t stream) {
  const T* qt = static_cast<const T*>(q);
  const T* kt = static_cast<const T*>(k);
  const T* vt = static_cast<const T*>(v);
  T* ot = static_cast<T*>(out);
  switch (stage) {
    case 0: return naive_forward<T>(qt, kt, vt, ot, lse, static_cast<float*>(workspace), BH, Nq, Nk, d, scale, stream);
    case 1: return online_softmax_forward<T>(qt, kt, vt, ot, lse, BH, Nq, Nk, d, scale, stream);
  }
  if constexpr (!std::is_same<T, float>::value) {  // resolve_stage keeps float away from 2 and 3
    if (stage == 2) return fa2_mma_forward<T>(qt, kt, vt, ot, lse, BH, Nq, Nk, d, scale, stream);
    if (stage == 3) return swizzle_ldmatrix_forward<T>(qt, kt, vt, ot, lse, BH, Nq, Nk, d, scale, arch, stream);
  }
  return cudaErrorInvalidValue;
}

template <class T>
cudaError_t backward_typed(const void* dout, const void* q, const void* k, const void* v, const void* out,
                           const float* lse, void* dq, void* dk, void* dv, float* workspace, int BH, int Nq,
                           int Nk, int d, float scale, bool deterministic, bool tensor_cores, cudaStream_t stream) {
  return flash_backward<T>(static_cast<const T*>(dout), static_cast<const T*>(q), static_cast<const T*>(k),
                           static_cast<const T*>(v), static_cast<const T*>(out), lse, static_cast<T*>(dq),
                           static_cast<T*>(dk), static_cast<T*>(dv), workspace, BH, Nq, Nk, d, scale,
                           deterministic, tensor_cores, stream);
}

}  // namespace

extern "C" {

int minisora_attn_fwd_stage(int dtype, int stage, int d) {
  if (dtype != MINISORA_F32 && dtype != MINISORA_F16 && dtype != MINISORA_BF16) return MINISORA_ERR_DTYPE;
  if (d != 32 && d != 64 && d != 128) return MINISORA_ERR_HEAD_DIM;
  int arch = 0;
  if (int err = current_arch(&arch)) return err;
  return resolve_stage(dtype, stage, arch);
}

size_t minisora_attn_fwd_workspace_bytes(int dtype, int stage, int B, int H, int Nq, int Nk, int d) {
  if (stage != 0 || check_sizes(dtype, B, H, Nq, Nk, d) != MINISORA_OK) return 0;
  return sizeof(float) * (size_t)B * H * Nq * Nk;
}

int minisora_attn_fwd(int dtype, int stage, const void* q, const void* k, const void* v, void* out, float* lse,
                      void* workspace, int B, int H, int Nq, int Nk, int d, float scale, void* stream) {
  if (int err = check_sizes(dtype, B, H, Nq, Nk, d)) return err;
  if ((long long)B * H * Nq == 0) return MINISORA_OK;
  if (!q || !k || !v || !out || !lse) return MINISORA_ERR_NULL;
  int arch = 0;
  if (int err = current_arch(&arch)) return err;
  int run = resolve_stage(dtype, stage, arch);
  if (run < 0) return run;
  if (is_tensor_core_stage(run) && !(aligned16(q) && aligned16(k) && aligned16(v) && aligned16(out))) {
    if (stage != -1) return MINISORA_ERR_ALIGNMENT;
    run = 1;
  }
  if (is_tensor_core_stage(run) && !(scale > 0.f)) {  // their softmax scales the row max once (fa2_common)
    if (stage != -1) return MINISORA_ERR_STAGE;
    run = 1;
  }
  if (run == 0 && !workspace) return MINISORA_ERR_WORKSPACE;
  const int BH = B * H;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case MINISORA_F32: return forward_typed<float>(run, q, k, v, out, lse, workspace, BH, Nq, Nk, d, scale, arch, s);
    case MINISORA_F16: return forward_typed<__half>(run, q, k, v, out, lse, workspace, BH, Nq, Nk, d, scale, arch, s);
    default: return forward_typed<__nv_bfloat16>(run, q, k, v, out, lse, workspace, BH, Nq, Nk, d, scale, arch, s);
  }
}

size_t minisora_attn_bwd_workspace_bytes(int dtype, int B, int H, int Nq, int Nk, int d, int deterministic) {
  if (check_sizes(dtype, B, H, Nq, Nk, d) != MINISORA_OK) return 0;
  // D = rowsum(dO * O), then the fp32 dQ accumulator unless deterministic (dQ written directly).
  return sizeof(float) * (size_t)B * H * Nq * (deterministic ? 1 : d + 1);
}

int minisora_attn_bwd(int dtype, const void* dout, const void* q, const void* k, const void* v, const void* out,
                      const float* lse, void* dq, void* dk, void* dv, float* workspace, int B, int H, int Nq,
                      int Nk, int d, float scale, int deterministic, void* stream) {
  if (int err = check_sizes(dtype, B, H, Nq, Nk, d)) return err;
  if ((long long)B * H * Nk == 0) return MINISORA_OK;
  if ((long long)B * H * Nq == 0) {
    // No queries: dk = dv = 0 (and dq is empty). Zeroing keeps the "all three are written" promise.
    if (!dk || !dv) return MINISORA_ERR_NULL;
    const size_t bytes = (size_t)B * H * Nk * d * (dtype == MINISORA_F32 ? 4 : 2);
    cudaError_t err = cudaMemsetAsync(dk, 0, bytes, static_cast<cudaStream_t>(stream));
    if (err == cudaSuccess) err = cudaMemsetAsync(dv, 0, bytes, static_cast<cudaStream_t>(stream));
    return (int)err;
  }
  if (!dout || !q || !k || !v || !out || !lse || !dq || !dk || !dv) return MINISORA_ERR_NULL;
  if (!workspace) return MINISORA_ERR_WORKSPACE;
  int arch = 0;
  if (int err = current_arch(&arch)) return err;
  if (arch < 75) return MINISORA_ERR_ARCH;
  auto backward = dtype == MINISORA_F32   ? backward_typed<float>
                  : dtype == MINISORA_F16 ? backward_typed<__half>
                                          : backward_typed<__nv_bfloat16>;
  // Tensor cores for fp16 (sm_75+) and bf16 (sm_80+), with 16-byte aligned tensors; else CUDA cores.
  const bool aligned = aligned16(dout) && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(dq) &&
                       aligned16(dk) && aligned16(dv);
  const bool tensor_cores = aligned && (dtype == MINISORA_F16 || (dtype == MINISORA_BF16 && arch >= 80));
  return backward(dout, q, k, v, out, lse, dq, dk, dv, workspace, B * H, Nq, Nk, d, scale, deterministic != 0,
                  tensor_cores, static_cast<cudaStream_t>(stream));
}

const char* minisora_attn_error_string(int code) {
  switch (code) {
    case MINISORA_OK: return "success";
    case MINISORA_ERR_DTYPE: return "unsupported dtype: use float32, float16 or bfloat16";
    case MINISORA_ERR_STAGE:
      return "unsupported stage: use -1 (best), 0, 1, or 2/3 (float16/bfloat16 and scale > 0 only)";
    case MINISORA_ERR_HEAD_DIM: return "unsupported head dim: minisora's CUDA kernels take d = 32, 64 or 128";
    case MINISORA_ERR_ARCH:
      return "GPU too old: the kernels need sm_75 or newer, and bfloat16 tensor-core stages (2, 3) need sm_80";
    case MINISORA_ERR_SHAPE: return "bad sizes: B, H, Nq, Nk must be >= 0, Nk >= 1 when Nq > 0, and B*H*N < 2^35";
    case MINISORA_ERR_ALIGNMENT:
      return "stages 2 and 3 need 16-byte aligned q, k, v, out (clone a sliced tensor, or use stage -1 or 1)";
    case MINISORA_ERR_WORKSPACE: return "workspace is NULL: allocate the size the *_workspace_bytes function returns";
    case MINISORA_ERR_NULL: return "a tensor pointer is NULL";
  }
  if (code > 0) return cudaGetErrorString(static_cast<cudaError_t>(code));
  return "unknown minisora attention error code";
}

}  // extern "C"
