// CPU FlashAttention-2: the entry points registered for the CPU dispatch key in binding.cpp.
//
// Shapes: q (B, H, N_q, d); k, v (B, H, N_k, d); out (B, H, N_q, d); lse (B, H, N_q).
// Dtypes: float32, float64, float16, bfloat16. Arithmetic runs in acc_t (float64 for float64
// inputs, float32 otherwise) and lse is returned in acc_t.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace minisora::cpu {

// out = softmax(scale * q k^T) v, lse = logsumexp(scale * q k^T) over keys.
std::tuple<at::Tensor, at::Tensor> attn_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// Gradients of out with respect to q, k, v, given dout = dLoss/dout and the forward's out, lse.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attn_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, double scale);

// Shape/dtype/device checks shared by both entry points (raise ValueError/TypeError in Python).
void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace minisora::cpu
