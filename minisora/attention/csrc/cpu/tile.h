// Small dense tile operations shared by the CPU forward and backward kernels.
//
// FlashAttention never looks at a whole (N_q, N_k) score matrix: it works on tiles of
// kBlockQ query rows against kBlockK key rows. A tile is copied out of the (B, H, N, d) tensor
// into a small row-major buffer of the accumulation type acc_t (float for float/half/bfloat16,
// double for double), so the arithmetic below never sees half precision and the buffers stay in
// L1/L2 cache while they are reused.
//
// The two matrix products are written as "add a scaled row of B to a row of C" (an axpy), with
// the innermost loop running over contiguous memory. The compiler vectorises that loop without
// having to reorder a floating-point sum, which a dot-product formulation would need.
#pragma once

#include <cstdint>

namespace minisora::cpu {

constexpr int64_t kBlockQ = 64;  // query rows per tile
constexpr int64_t kBlockK = 64;  // key rows per tile

// dst (rows x d) = src (rows x d), converted to acc_t.
template <typename acc_t, typename scalar_t>
inline void load_tile(const scalar_t* src, int64_t rows, int64_t d, acc_t* dst) {
  for (int64_t i = 0; i < rows * d; ++i) dst[i] = static_cast<acc_t>(src[i]);
}

// dst (d x rows) = transpose of src (rows x d), converted to acc_t. With keys stored this way,
// a row of scores Q_r K^T is a sum over c of Q[r][c] * (row c of K^T): an axpy per c.
template <typename acc_t, typename scalar_t>
inline void load_tile_transposed(const scalar_t* src, int64_t rows, int64_t d, acc_t* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < d; ++c) dst[c * rows + r] = static_cast<acc_t>(src[r * d + c]);
  }
}

// C (m x n) += A (m x k) @ B (k x n), all row-major.
template <typename acc_t>
inline void gemm_nn(const acc_t* a, const acc_t* b, acc_t* c, int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; ++i) {
    acc_t* c_row = c + i * n;
    for (int64_t p = 0; p < k; ++p) {
      const acc_t a_ip = a[i * k + p];
      const acc_t* b_row = b + p * n;
      for (int64_t j = 0; j < n; ++j) c_row[j] += a_ip * b_row[j];
    }
  }
}

// C (m x n) += A^T @ B with A (k x m) and B (k x n) row-major: every row p of A scatters
// A[p][i] * (row p of B) into row i of C. Used for dV += P^T dO and dK += dS^T Q.
template <typename acc_t>
inline void gemm_tn(const acc_t* a, const acc_t* b, acc_t* c, int64_t m, int64_t k, int64_t n) {
  for (int64_t p = 0; p < k; ++p) {
    const acc_t* b_row = b + p * n;
    for (int64_t i = 0; i < m; ++i) {
      const acc_t a_pi = a[p * m + i];
      acc_t* c_row = c + i * n;
      for (int64_t j = 0; j < n; ++j) c_row[j] += a_pi * b_row[j];
    }
  }
}

}  // namespace minisora::cpu
