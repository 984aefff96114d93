// Tile sizes and the two steps every CPU tile runs, shared by forward.cpp and backward.cpp.
//
// FlashAttention never looks at a whole (N_q, N_k) score matrix: it works on tiles of kBlockQ
// query rows against kBlockK key rows. Each tile's two products (Q K^T and P V in the forward,
// five in the backward) are ATen matmuls on views of the inputs -- BLAS does the flops, as in
// PyTorch's own CPU flash attention (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp) -- and
// the element-wise softmax steps are ATen's vectorised exp/max/sum on the (kBlockQ, kBlockK) tile.
// The loop itself (online softmax, P recomputed from lse) is FlashAttention-2's algorithm;
// minisora/attention/reference.py:blockwise_attention is the same loop in Python.
//
// The tiles run inside at::parallel_for, so every ATen call in them runs on the calling thread
// (ATen does not nest parallel regions) and the tensors stay small enough for L2.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace minisora::cpu {

constexpr int64_t kBlockQ = 128;  // query rows per tile
constexpr int64_t kBlockK = 512;  // key rows per tile

// rows [start, start + n) of the (N, d) matrix `head`: a view, no copy.
inline at::Tensor rows_of(const at::Tensor& head, int64_t start, int64_t n) { return head.narrow(0, start, n); }

}  // namespace minisora::cpu
