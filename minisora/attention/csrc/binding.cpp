// Registers minisora's attention as PyTorch operators.
//
// TORCH_LIBRARY declares the operator schemas once; the dispatcher then routes each call to the
// implementation registered for the inputs' device. The CPU kernels are registered here in C++.
// The CUDA kernels are registered from Python (minisora/attention/op.py), so this file needs no
// CUDA headers and builds the same against a CPU-only or a CUDA build of PyTorch.
//
//   torch.ops.minisora.attn_fwd(q, k, v, scale) -> (out, lse)
//   torch.ops.minisora.attn_bwd(dout, q, k, v, out, lse, scale) -> (dq, dk, dv)
//
// Shapes: q (B, H, N_q, d); k, v (B, H, N_k, d); out, dout, dq (B, H, N_q, d); lse (B, H, N_q).
// Python (op.py) adds what autograd and torch.compile need: a "fake" implementation that only
// computes output shapes, and the rule that turns attn_bwd into attn_fwd's gradient.
#include <torch/library.h>

#include "cpu/attention.h"

TORCH_LIBRARY(minisora, m) {
  m.def("attn_fwd(Tensor q, Tensor k, Tensor v, float scale) -> (Tensor out, Tensor lse)");
  m.def(
      "attn_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, float scale)"
      " -> (Tensor dq, Tensor dk, Tensor dv)");
}

TORCH_LIBRARY_IMPL(minisora, CPU, m) {
  m.impl("attn_fwd", &minisora::cpu::attn_fwd);
  m.impl("attn_bwd", &minisora::cpu::attn_bwd);
}
