// CPU FlashAttention-2 forward: tiled attention with an online softmax.
//
// Work is split into independent tasks, one per (batch, head, tile of kBlockQ queries), run in
// parallel with at::parallel_for. A task streams over the keys in tiles of kBlockK and keeps,
// for its query rows:
//     m    the largest score seen so far, (rows, 1)
//     l    the sum of exp(score - m) so far, (rows, 1)
//     acc  the sum of exp(score - m) * v so far, (rows, d): an unnormalised output.
// When a new key tile raises the max from m to m_new, the old sums were taken relative to m, so
// they are multiplied by alpha = exp(m - m_new) before the tile's terms are added. After the
// last tile, out = acc / l and lse = m + log(l).
// Memory per task: a few (kBlockQ x kBlockK) and (kBlockQ x d) tiles - never N_q x N_k.
// Each tile's S = Q K^T and acc += P V are BLAS matmuls (tile.h). Tri Dao, FlashAttention-2,
// arXiv:2307.08691, Algorithm 1.
#include "attention.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "tile.h"

namespace minisora::cpu {

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                    "minisora attention: q, k, v must be (B, H, N, d), got ", q.sizes(), ", ",
                    k.sizes(), ", ", v.sizes());
  TORCH_CHECK_VALUE(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
                    "minisora attention (CPU kernel): q, k, v must all be CPU tensors");
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                   "minisora attention: q, k, v must share one dtype");
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()), "minisora attention: q must be floating, got ",
                   q.scalar_type());
  TORCH_CHECK_VALUE(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
                        q.size(1) == v.size(1),
                    "minisora attention: q, k, v must agree on (B, H)");
  TORCH_CHECK_VALUE(q.size(3) == k.size(3) && q.size(3) == v.size(3),
                    "minisora attention: q, k, v must share the head dim d");
  TORCH_CHECK_VALUE(k.size(2) == v.size(2) && k.size(2) > 0,
                    "minisora attention: k and v need the same, non-zero number of keys");
}

namespace {

// One task: query rows [q0, q0 + rows) of one (batch, head). q (already times scale), k, v: that
// head's (N, d) in the accumulation dtype; out (N_q, d) in the input dtype and lse (N_q,) are written in place.
void forward_tile(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor out,
                  at::Tensor lse, int64_t q0, int64_t rows) {
  const at::Tensor q_tile = rows_of(q, q0, rows);
  const int64_t n_k = k.size(0);
  at::Tensor acc, m, l;  // set by the first key tile
  for (int64_t k0 = 0; k0 < n_k; k0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, n_k - k0);  // the last tile may be short
    const at::Tensor k_tile = rows_of(k, k0, cols);
    if (k0 == 0) {  // first tile: m = rowmax(S)
      at::Tensor s = at::mm(q_tile, k_tile.t());  // S = (scale Q) K^T
      m = s.amax(1, /*keepdim=*/true);
      s.sub_(m).exp_();  // P~ = exp(S - m), ATen's vectorised exp
      l = s.sum(1, /*keepdim=*/true);
      acc = at::mm(s, rows_of(v, k0, cols));
      continue;
    }
    // Later tiles: S - m comes out of the matmul itself (addmm with the running max as a bias).
    // Usually no score of the tile exceeds the running max: then P~ = exp(S - m) needs no further
    // pass and nothing is rescaled. Otherwise the rows whose max grew are rescaled as usual.
    at::Tensor s = at::addmm(m.neg(), q_tile, k_tile.t());  // S - m
    const at::Tensor growth = s.amax(1, /*keepdim=*/true).clamp_min_(0);  // m_new - m >= 0
    if (growth.max().item<double>() > 0) {
      s.sub_(growth);
      const at::Tensor alpha = growth.neg().exp_();  // exp(m - m_new)
      l.mul_(alpha);
      acc.mul_(alpha);
      m.add_(growth);
    }
    s.exp_();
    l.add_(s.sum(1, /*keepdim=*/true));
    acc.addmm_(s, rows_of(v, k0, cols));  // acc += P~ V
  }
  rows_of(out, q0, rows).copy_(acc.div_(l));
  lse.narrow(0, q0, rows).copy_(m.add_(l.log_()).squeeze(1));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> attn_fwd(const at::Tensor& q_in, const at::Tensor& k_in,
                                            const at::Tensor& v_in, double scale) {
  check_qkv(q_in, k_in, v_in);
  // Autograd sits above this kernel (op.py): nothing in here is recorded, and the in-place tile
  // updates on views must not be checked against a grad mode (set again in each parallel task).
  const c10::AutoGradMode no_grad(false);
  // at::parallel_for's workers do not inherit this thread's grad mode or inference mode: each task
  // restores them, or in-place tile writes into outputs made under inference_mode fail on a worker.
  const at::ThreadLocalState caller_modes;
  // Arithmetic in float32 (float64 for float64): 16-bit inputs are converted once, O(N d).
  const auto acc_type = at::toOpMathType(q_in.scalar_type());
  // q is scaled once here, O(N d), instead of every score tile.
  const at::Tensor q = q_in.to(acc_type).mul(scale).contiguous(), k = k_in.to(acc_type).contiguous(),
                   v = v_in.to(acc_type).contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), n_q = q.size(2), n_k = k.size(2), d = q.size(3);
  const int64_t q_tiles = (n_q + kBlockQ - 1) / kBlockQ;
  at::Tensor out = at::empty(q_in.sizes(), q_in.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({batch, heads, n_q}, q.options());
  const at::Tensor q3 = q.view({batch * heads, n_q, d}), k3 = k.view({batch * heads, n_k, d}),
                   v3 = v.view({batch * heads, n_k, d}), out3 = out.view({batch * heads, n_q, d}),
                   lse2 = lse.view({batch * heads, n_q});
  // Tasks are (batch * head, query tile) pairs, flattened; grain 1 because each task is big.
  at::parallel_for(0, batch * heads * q_tiles, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard same_modes(caller_modes);  // grad and inference mode are per thread
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / q_tiles, q0 = (task % q_tiles) * kBlockQ;
      forward_tile(q3[bh], k3[bh], v3[bh], out3[bh], lse2[bh], q0, std::min(kBlockQ, n_q - q0));
    }
  });
  return {out, lse};
}

}  // namespace minisora::cpu
