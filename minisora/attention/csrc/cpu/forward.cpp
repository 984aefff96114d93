// CPU FlashAttention-2 forward: tiled attention with an online softmax.
//
// Work is split into independent tasks, one per (batch, head, tile of kBlockQ queries), run in
// parallel with at::parallel_for. A task streams over the keys in tiles of kBlockK and keeps,
// for each of its query rows r:
//     m[r]   the largest score seen so far,
//     l[r]   the sum of exp(score - m[r]) so far,
//     acc[r] the sum of exp(score - m[r]) * v so far (an unnormalised output row).
// When a new key tile raises the max from m to m_new, the old sums were taken relative to m, so
// they are multiplied by alpha = exp(m - m_new) before the tile's terms are added. After the
// last tile, out[r] = acc[r] / l[r] and lse[r] = m[r] + log(l[r]).
// Memory per task: a few (kBlockQ x kBlockK) and (kBlock x d) buffers - never N_q x N_k.
// This is minisora/attention/reference.py:blockwise_attention written in C++.
#include "attention.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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
  TORCH_CHECK_VALUE(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
                        q.size(1) == v.size(1),
                    "minisora attention: q, k, v must agree on (B, H)");
  TORCH_CHECK_VALUE(q.size(3) == k.size(3) && q.size(3) == v.size(3),
                    "minisora attention: q, k, v must share the head dim d");
  TORCH_CHECK_VALUE(k.size(2) == v.size(2) && k.size(2) > 0,
                    "minisora attention: k and v need the same, non-zero number of keys");
}

namespace {

// One thread's scratch tiles, allocated once per parallel chunk and reused by its tasks.
template <typename acc_t>
struct ForwardTiles {
  explicit ForwardTiles(int64_t d)
      : q(kBlockQ * d), kt(d * kBlockK), v(kBlockK * d), s(kBlockQ * kBlockK), acc(kBlockQ * d),
        m(kBlockQ), l(kBlockQ) {}
  std::vector<acc_t> q;    // (rows, d)
  std::vector<acc_t> kt;   // (d, cols): keys, transposed
  std::vector<acc_t> v;    // (cols, d)
  std::vector<acc_t> s;    // (rows, cols): scores, then exp(scores - m)
  std::vector<acc_t> acc;  // (rows, d): unnormalised output
  std::vector<acc_t> m;    // (rows,): running max
  std::vector<acc_t> l;    // (rows,): running sum of exp(scores - m)
};

// One task: query rows [q0, q0 + rows) of one (batch, head). Pointers are at that head's start.
template <typename scalar_t, typename acc_t>
void forward_tile(const scalar_t* q, const scalar_t* k, const scalar_t* v, scalar_t* out,
                  acc_t* lse, int64_t q0, int64_t rows, int64_t n_k, int64_t d, acc_t scale,
                  ForwardTiles<acc_t>& t) {
  acc_t *s = t.s.data(), *acc = t.acc.data(), *m = t.m.data(), *l = t.l.data();
  load_tile(q + q0 * d, rows, d, t.q.data());
  std::fill(acc, acc + rows * d, acc_t(0));
  std::fill(m, m + rows, -std::numeric_limits<acc_t>::infinity());
  std::fill(l, l + rows, acc_t(0));

  for (int64_t k0 = 0; k0 < n_k; k0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, n_k - k0);  // the last tile may be short
    load_tile_transposed(k + k0 * d, cols, d, t.kt.data());
    load_tile(v + k0 * d, cols, d, t.v.data());

    std::fill(s, s + rows * cols, acc_t(0));
    gemm_nn(t.q.data(), t.kt.data(), s, rows, d, cols);  // s = Q K^T for this tile

    for (int64_t r = 0; r < rows; ++r) {
      acc_t* s_row = s + r * cols;
      acc_t m_new = m[r];
      for (int64_t c = 0; c < cols; ++c) {
        s_row[c] *= scale;
        m_new = std::max(m_new, s_row[c]);
      }
      // exp(-inf) = 0 on the first tile: nothing accumulated yet, nothing to rescale.
      const acc_t alpha = std::exp(m[r] - m_new);
      acc_t tile_sum = 0;
      for (int64_t c = 0; c < cols; ++c) {
        s_row[c] = std::exp(s_row[c] - m_new);
        tile_sum += s_row[c];
      }
      l[r] = alpha * l[r] + tile_sum;
      for (int64_t x = 0; x < d; ++x) acc[r * d + x] *= alpha;
      m[r] = m_new;
    }
    gemm_nn(s, t.v.data(), acc, rows, cols, d);  // acc += exp(S - m) V
  }

  for (int64_t r = 0; r < rows; ++r) {
    const acc_t inv_l = acc_t(1) / l[r];
    for (int64_t x = 0; x < d; ++x) {
      out[(q0 + r) * d + x] = static_cast<scalar_t>(acc[r * d + x] * inv_l);
    }
    lse[q0 + r] = m[r] + std::log(l[r]);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> attn_fwd(const at::Tensor& q_in, const at::Tensor& k_in,
                                            const at::Tensor& v_in, double scale) {
  check_qkv(q_in, k_in, v_in);
  // The kernel indexes dense (B, H, N, d) memory; contiguous() is free when already dense.
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t batch_heads = q.size(0) * q.size(1);
  const int64_t n_q = q.size(2), n_k = k.size(2), d = q.size(3);
  const int64_t q_tiles = (n_q + kBlockQ - 1) / kBlockQ;

  at::Tensor out = q.new_empty(q.sizes());
  at::Tensor lse = q.new_empty({q.size(0), q.size(1), n_q},
                               q.options().dtype(at::toOpMathType(q.scalar_type())));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "minisora_attn_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* q_ptr = q.const_data_ptr<scalar_t>();
    const scalar_t* k_ptr = k.const_data_ptr<scalar_t>();
    const scalar_t* v_ptr = v.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    acc_t* lse_ptr = lse.data_ptr<acc_t>();
    // Tasks are (batch * head, query tile) pairs, flattened; grain 1 because each task is big.
    at::parallel_for(0, batch_heads * q_tiles, 1, [&](int64_t begin, int64_t end) {
      ForwardTiles<acc_t> tiles(d);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / q_tiles, q0 = (task % q_tiles) * kBlockQ;
        forward_tile<scalar_t, acc_t>(q_ptr + bh * n_q * d, k_ptr + bh * n_k * d,
                                      v_ptr + bh * n_k * d, out_ptr + bh * n_q * d,
                                      lse_ptr + bh * n_q, q0, std::min(kBlockQ, n_q - q0), n_k,
                                      d, static_cast<acc_t>(scale), tiles);
      }
    });
  });
  return {out, lse};
}

}  // namespace minisora::cpu
