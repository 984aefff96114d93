// CPU FlashAttention-2 backward: gradients without storing any N_q x N_k matrix.
//
// With S = scale Q K^T and P = softmax(S) row-wise, out = P V, and dO = dLoss/dout:
//     dV = P^T dO
//     dP = dO V^T
//     dS = P * (dP - D),   D[r] = rowsum(dO * O)[r]   (= rowsum(P * dP)[r], but O(N d) to get)
//     dQ = scale dS K,     dK = scale dS^T Q
// P is never stored: for any (query tile, key tile) pair it is recomputed as exp(S - lse),
// lse being the forward's log-sum-exp (it already contains both the row max and the row sum).
// Tri Dao, FlashAttention-2, arXiv:2307.08691, Algorithm 2. Every product is a BLAS matmul on
// tile views (tile.h).
//
// Two schedules, both deterministic (no atomics, fixed summation order):
//   * fused, when there are at least as many (batch, head) pairs as threads: one task per head
//     loops over query tiles and key tiles once, accumulating dQ for the query tile and dK, dV
//     for the whole head: five matmuls per tile pair, as in FlashAttention-2.
//   * split, for few heads (e.g. B = H = 1) so that every core has work: one task per (head,
//     key tile) accumulates dK, dV over all query tiles, then one task per (head, query tile)
//     accumulates dQ over all key tiles. P and dS are recomputed in both: seven matmuls per pair.
// This is minisora/attention/reference.py:blockwise_attention_backward written in C++.
#include "attention.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "tile.h"

namespace minisora::cpu {
namespace {

// One (batch, head), every tensor (N, d) or (N, 1) in the accumulation dtype. q is scale * Q, so
// dK += dS^T q needs no final scale.
struct Head {
  at::Tensor q, k, v, dout, lse, delta;  // lse and delta = D as (N_q, 1) columns
};

// P = exp(scale Q K^T - lse) and dS = P * (dO V^T - D) for query rows [q0, q0 + rows) against key
// rows [k0, k0 + cols).
std::pair<at::Tensor, at::Tensor> p_and_ds(const Head& h, int64_t q0, int64_t rows, int64_t k0, int64_t cols) {
  const at::Tensor q = rows_of(h.q, q0, rows), dout = rows_of(h.dout, q0, rows);
  // h.q is already scale Q, and lse comes in as the matmul's bias: S - lse in one BLAS call.
  at::Tensor p = at::addmm(rows_of(h.lse, q0, rows).neg(), q, rows_of(h.k, k0, cols).t()).exp_();
  at::Tensor ds = at::addmm(rows_of(h.delta, q0, rows).neg(), dout, rows_of(h.v, k0, cols).t());  // dP - D
  ds.mul_(p);
  return {p, ds};
}

// Fused: every gradient of one head. dq, dk, dv are that head's (N, d) accumulators (zeroed).
void backward_head(const Head& h, at::Tensor dq, at::Tensor dk, at::Tensor dv) {
  const int64_t n_q = h.q.size(0), n_k = h.k.size(0);
  for (int64_t q0 = 0; q0 < n_q; q0 += kBlockQ) {
    const int64_t rows = std::min(kBlockQ, n_q - q0);
    at::Tensor dq_tile = rows_of(dq, q0, rows);
    for (int64_t k0 = 0; k0 < n_k; k0 += kBlockK) {
      const int64_t cols = std::min(kBlockK, n_k - k0);
      auto [p, ds] = p_and_ds(h, q0, rows, k0, cols);
      rows_of(dv, k0, cols).addmm_(p.t(), rows_of(h.dout, q0, rows));  // dV += P^T dO
      rows_of(dk, k0, cols).addmm_(ds.t(), rows_of(h.q, q0, rows));    // dK += dS^T Q
      dq_tile.addmm_(ds, rows_of(h.k, k0, cols));                      // dQ += dS K
    }
  }
}

// Split, pass 1: dK, dV for key rows [k0, k0 + cols) of one head.
void dkdv_tile(const Head& h, int64_t k0, int64_t cols, at::Tensor dk, at::Tensor dv) {
  at::Tensor dk_tile = rows_of(dk, k0, cols), dv_tile = rows_of(dv, k0, cols);
  for (int64_t q0 = 0; q0 < h.q.size(0); q0 += kBlockQ) {
    const int64_t rows = std::min(kBlockQ, h.q.size(0) - q0);
    auto [p, ds] = p_and_ds(h, q0, rows, k0, cols);
    dv_tile.addmm_(p.t(), rows_of(h.dout, q0, rows));
    dk_tile.addmm_(ds.t(), rows_of(h.q, q0, rows));
  }
}

// Split, pass 2: dQ for query rows [q0, q0 + rows) of one head.
void dq_tile(const Head& h, int64_t q0, int64_t rows, at::Tensor dq) {
  at::Tensor dq_rows = rows_of(dq, q0, rows);
  for (int64_t k0 = 0; k0 < h.k.size(0); k0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, h.k.size(0) - k0);
    dq_rows.addmm_(p_and_ds(h, q0, rows, k0, cols).second, rows_of(h.k, k0, cols));
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attn_bwd(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in, double scale) {
  check_qkv(q_in, k_in, v_in);
  // Autograd sits above this kernel (op.py): nothing in here is recorded, and the in-place tile
  // updates on views must not be checked against a grad mode (set again in each parallel task).
  const c10::AutoGradMode no_grad(false);
  // at::parallel_for's workers do not inherit this thread's grad mode or inference mode: each task
  // restores them, or in-place tile writes into outputs made under inference_mode fail on a worker.
  const at::ThreadLocalState caller_modes;
  TORCH_CHECK_VALUE(dout_in.sizes() == q_in.sizes(), "minisora attn_bwd: dout must have q's shape ",
                    q_in.sizes(), ", got ", dout_in.sizes());
  TORCH_CHECK_VALUE(out_in.sizes() == q_in.sizes(), "minisora attn_bwd: out must have q's shape ",
                    q_in.sizes(), ", got ", out_in.sizes());
  TORCH_CHECK_TYPE(dout_in.scalar_type() == q_in.scalar_type(), "minisora attn_bwd: dout must have q's dtype");
  TORCH_CHECK_TYPE(out_in.scalar_type() == q_in.scalar_type(), "minisora attn_bwd: out must have q's dtype");
  TORCH_CHECK_VALUE(lse_in.dim() == 3 && lse_in.size(0) == q_in.size(0) &&
                        lse_in.size(1) == q_in.size(1) && lse_in.size(2) == q_in.size(2),
                    "minisora attn_bwd: lse must be (B, H, N_q)");
  const auto acc_type = at::toOpMathType(q_in.scalar_type());
  TORCH_CHECK_TYPE(lse_in.scalar_type() == acc_type,
                   "minisora attn_bwd: lse must be float32 (float64 for float64 inputs)");
  TORCH_CHECK_VALUE(dout_in.device().is_cpu() && out_in.device().is_cpu() && lse_in.device().is_cpu(),
                    "minisora attn_bwd (CPU kernel): all tensors must be on the CPU");
  const int64_t batch = q_in.size(0), heads = q_in.size(1), bh_count = batch * heads;
  const int64_t n_q = q_in.size(2), n_k = k_in.size(2), d = q_in.size(3);
  auto heads_of = [&](const at::Tensor& t, int64_t n, int64_t cols) {  // (B, H, N, c) -> (B*H, N, c)
    return t.to(acc_type).contiguous().view({bh_count, n, cols});
  };
  const at::Tensor q = heads_of(q_in, n_q, d).mul(scale), k = heads_of(k_in, n_k, d), v = heads_of(v_in, n_k, d);
  const at::Tensor dout = heads_of(dout_in, n_q, d), lse = heads_of(lse_in, n_q, 1);
  // D = rowsum(dO * O), (B*H, N_q, 1), in the accumulation dtype.
  const at::Tensor delta = dout.mul(heads_of(out_in, n_q, d)).sum(-1, /*keepdim=*/true);
  at::Tensor dq = at::zeros_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
  auto head = [&](int64_t bh) { return Head{q[bh], k[bh], v[bh], dout[bh], lse[bh], delta[bh]}; };

  if (bh_count >= at::get_num_threads()) {
    at::parallel_for(0, bh_count, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard same_modes(caller_modes);  // grad and inference mode are per thread
      for (int64_t bh = begin; bh < end; ++bh) backward_head(head(bh), dq[bh], dk[bh], dv[bh]);
    });
  } else {
    const int64_t q_tiles = (n_q + kBlockQ - 1) / kBlockQ, k_tiles = (n_k + kBlockK - 1) / kBlockK;
    at::parallel_for(0, bh_count * k_tiles, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard same_modes(caller_modes);  // grad and inference mode are per thread
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / k_tiles, k0 = (task % k_tiles) * kBlockK;
        dkdv_tile(head(bh), k0, std::min(kBlockK, n_k - k0), dk[bh], dv[bh]);
      }
    });
    at::parallel_for(0, bh_count * q_tiles, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard same_modes(caller_modes);  // grad and inference mode are per thread
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / q_tiles, q0 = (task % q_tiles) * kBlockQ;
        dq_tile(head(bh), q0, std::min(kBlockQ, n_q - q0), dq[bh]);
      }
    });
  }
  const auto shape = q_in.sizes();
  return {dq.mul_(scale).view(shape).to(q_in.scalar_type()),
          dk.view(k_in.sizes()).to(q_in.scalar_type()),
          dv.view(v_in.sizes()).to(q_in.scalar_type())};
}

}  // namespace minisora::cpu
