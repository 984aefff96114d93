// CPU FlashAttention-2 backward: gradients without storing any N_q x N_k matrix.
//
// With S = scale Q K^T and P = softmax(S) row-wise, out = P V, and dO = dLoss/dout:
//     dV = P^T dO
//     dP = dO V^T
//     dS = P * (dP - D),   D[r] = rowsum(dO * O)[r]   (= rowsum(P * dP)[r], but O(N d) to get)
//     dQ = scale dS K,     dK = scale dS^T Q
// P is never stored: for any (query tile, key tile) pair it is recomputed as exp(S - lse),
// lse being the forward's log-sum-exp (it already contains both the row max and the row sum).
//
// Three parallel passes:
//   0. D for every query row.
//   1. one task per (batch, head, key tile): loops over all query tiles and accumulates that key
//      tile's dK and dV rows, which no other task touches.
//   2. one task per (batch, head, query tile): loops over all key tiles and accumulates dQ.
// A GPU kernel usually fuses 1 and 2 and adds dQ with atomics; on a CPU recomputing P once more
// is cheaper than synchronising threads, and the result is deterministic.
// This is minisora/attention/reference.py:blockwise_attention_backward written in C++.
#include "attention.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tile.h"

namespace minisora::cpu {
namespace {

// Pointers to one (batch, head) of every tensor the backward reads or writes.
template <typename scalar_t, typename acc_t>
struct Head {
  const scalar_t *q, *k, *v, *dout;
  const acc_t *lse, *delta;  // delta = D
  int64_t n_q, n_k, d;
  acc_t scale;
};

// One thread's scratch tiles, allocated once per parallel chunk and reused by its tasks.
template <typename acc_t>
struct BackwardTiles {
  explicit BackwardTiles(int64_t d)
      : q(kBlockQ * d), dout(kBlockQ * d), kt(d * kBlockK), vt(d * kBlockK), k(kBlockK * d),
        p(kBlockQ * kBlockK), ds(kBlockQ * kBlockK), dq(kBlockQ * d), dk(kBlockK * d),
        dv(kBlockK * d) {}
  std::vector<acc_t> q, dout;  // (rows, d)
  std::vector<acc_t> kt, vt;   // (d, cols): keys and values, transposed
  std::vector<acc_t> k;        // (cols, d): keys, row-major (for dQ += dS K)
  std::vector<acc_t> p, ds;    // (rows, cols)
  std::vector<acc_t> dq;       // (rows, d) accumulator, pass 2
  std::vector<acc_t> dk, dv;   // (cols, d) accumulators, pass 1
};

// p = exp(scale Q K^T - lse), ds = p * (dO V^T - D) for query rows [q0, q0 + rows) against
// the key tile in t.kt, t.vt (cols keys). Expects t.q, t.dout, t.kt, t.vt to be loaded.
template <typename scalar_t, typename acc_t>
void recompute_p_and_ds(const Head<scalar_t, acc_t>& h, BackwardTiles<acc_t>& t, int64_t q0,
                        int64_t rows, int64_t cols) {
  acc_t *p = t.p.data(), *ds = t.ds.data();
  std::fill(p, p + rows * cols, acc_t(0));
  std::fill(ds, ds + rows * cols, acc_t(0));
  gemm_nn(t.q.data(), t.kt.data(), p, rows, h.d, cols);      // p = Q K^T
  gemm_nn(t.dout.data(), t.vt.data(), ds, rows, h.d, cols);  // ds = dP = dO V^T
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t lse_r = h.lse[q0 + r], delta_r = h.delta[q0 + r];
    for (int64_t c = 0; c < cols; ++c) {
      p[r * cols + c] = std::exp(h.scale * p[r * cols + c] - lse_r);
      ds[r * cols + c] = p[r * cols + c] * (ds[r * cols + c] - delta_r);
    }
  }
}

// Pass 1: dK, dV for key rows [k0, k0 + cols) of one head.
template <typename scalar_t, typename acc_t>
void dkdv_tile(const Head<scalar_t, acc_t>& h, int64_t k0, int64_t cols, scalar_t* dk,
               scalar_t* dv, BackwardTiles<acc_t>& t) {
  const int64_t d = h.d;
  std::fill(t.dk.begin(), t.dk.end(), acc_t(0));
  std::fill(t.dv.begin(), t.dv.end(), acc_t(0));
  load_tile_transposed(h.k + k0 * d, cols, d, t.kt.data());
  load_tile_transposed(h.v + k0 * d, cols, d, t.vt.data());
  for (int64_t q0 = 0; q0 < h.n_q; q0 += kBlockQ) {
    const int64_t rows = std::min(kBlockQ, h.n_q - q0);
    load_tile(h.q + q0 * d, rows, d, t.q.data());
    load_tile(h.dout + q0 * d, rows, d, t.dout.data());
    recompute_p_and_ds(h, t, q0, rows, cols);
    gemm_tn(t.p.data(), t.dout.data(), t.dv.data(), cols, rows, d);  // dV += P^T dO
    gemm_tn(t.ds.data(), t.q.data(), t.dk.data(), cols, rows, d);    // dK += dS^T Q
  }
  for (int64_t i = 0; i < cols * d; ++i) {
    dk[k0 * d + i] = static_cast<scalar_t>(h.scale * t.dk[i]);
    dv[k0 * d + i] = static_cast<scalar_t>(t.dv[i]);
  }
}

// Pass 2: dQ for query rows [q0, q0 + rows) of one head.
template <typename scalar_t, typename acc_t>
void dq_tile(const Head<scalar_t, acc_t>& h, int64_t q0, int64_t rows, scalar_t* dq,
             BackwardTiles<acc_t>& t) {
  const int64_t d = h.d;
  std::fill(t.dq.begin(), t.dq.end(), acc_t(0));
  load_tile(h.q + q0 * d, rows, d, t.q.data());
  load_tile(h.dout + q0 * d, rows, d, t.dout.data());
  for (int64_t k0 = 0; k0 < h.n_k; k0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, h.n_k - k0);
    load_tile_transposed(h.k + k0 * d, cols, d, t.kt.data());
    load_tile_transposed(h.v + k0 * d, cols, d, t.vt.data());
    load_tile(h.k + k0 * d, cols, d, t.k.data());
    recompute_p_and_ds(h, t, q0, rows, cols);
    gemm_nn(t.ds.data(), t.k.data(), t.dq.data(), rows, cols, d);  // dQ += dS K
  }
  for (int64_t i = 0; i < rows * d; ++i) dq[q0 * d + i] = static_cast<scalar_t>(h.scale * t.dq[i]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attn_bwd(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in, double scale) {
  check_qkv(q_in, k_in, v_in);
  TORCH_CHECK_VALUE(dout_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
                    "minisora attn_bwd: dout and out must have q's shape ", q_in.sizes());
  TORCH_CHECK_TYPE(dout_in.scalar_type() == q_in.scalar_type() &&
                       out_in.scalar_type() == q_in.scalar_type(),
                   "minisora attn_bwd: dout and out must have q's dtype");
  TORCH_CHECK_VALUE(lse_in.dim() == 3 && lse_in.size(0) == q_in.size(0) &&
                        lse_in.size(1) == q_in.size(1) && lse_in.size(2) == q_in.size(2),
                    "minisora attn_bwd: lse must be (B, H, N_q)");
  TORCH_CHECK_TYPE(lse_in.scalar_type() == at::toOpMathType(q_in.scalar_type()),
                   "minisora attn_bwd: lse must be float32 (float64 for float64 inputs)");
  TORCH_CHECK_VALUE(dout_in.device().is_cpu() && out_in.device().is_cpu() && lse_in.device().is_cpu(),
                    "minisora attn_bwd (CPU kernel): all tensors must be on the CPU");
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor dout = dout_in.contiguous(), lse = lse_in.contiguous();
  const int64_t batch_heads = q.size(0) * q.size(1);
  const int64_t n_q = q.size(2), n_k = k.size(2), d = q.size(3);
  const int64_t q_tiles = (n_q + kBlockQ - 1) / kBlockQ, k_tiles = (n_k + kBlockK - 1) / kBlockK;

  // Pass 0: D = rowsum(dO * O), (B, H, N_q), in the accumulation dtype.
  const at::Tensor delta = dout.to(lse.scalar_type()).mul(out_in.to(lse.scalar_type())).sum(-1);
  at::Tensor dq = q.new_empty(q.sizes()), dk = k.new_empty(k.sizes()), dv = v.new_empty(v.sizes());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "minisora_attn_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Head pointers for the flattened (batch * head) index bh.
    auto head = [&](int64_t bh) {
      return Head<scalar_t, acc_t>{q.const_data_ptr<scalar_t>() + bh * n_q * d,
                                   k.const_data_ptr<scalar_t>() + bh * n_k * d,
                                   v.const_data_ptr<scalar_t>() + bh * n_k * d,
                                   dout.const_data_ptr<scalar_t>() + bh * n_q * d,
                                   lse.const_data_ptr<acc_t>() + bh * n_q,
                                   delta.const_data_ptr<acc_t>() + bh * n_q,
                                   n_q, n_k, d, static_cast<acc_t>(scale)};
    };
    at::parallel_for(0, batch_heads * k_tiles, 1, [&](int64_t begin, int64_t end) {
      BackwardTiles<acc_t> tiles(d);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / k_tiles, k0 = (task % k_tiles) * kBlockK;
        dkdv_tile(head(bh), k0, std::min(kBlockK, n_k - k0), dk.data_ptr<scalar_t>() + bh * n_k * d,
                  dv.data_ptr<scalar_t>() + bh * n_k * d, tiles);
      }
    });
    at::parallel_for(0, batch_heads * q_tiles, 1, [&](int64_t begin, int64_t end) {
      BackwardTiles<acc_t> tiles(d);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / q_tiles, q0 = (task % q_tiles) * kBlockQ;
        dq_tile(head(bh), q0, std::min(kBlockQ, n_q - q0), dq.data_ptr<scalar_t>() + bh * n_q * d,
                tiles);
      }
    });
  });
  return {dq, dk, dv};
}

}  // namespace minisora::cpu
