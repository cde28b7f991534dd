// How a row-major matrix product C = A B + beta C is handed to a column-major BLAS (cuBLAS): which
// operand is read transposed, with which leading dimension and batch stride, and which operands
// must be copied first. The CUDA-free half of csrc/cuda/blas.cuh, so that the CPU tests replay the
// very arguments the CUDA build derives (csrc/cpu/blas_emulation.h reads memory as cuBLAS would):
// a wrong flag, leading dimension or stride fails a CPU test rather than a GPU run.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <optional>

namespace rnnkern {

// An operand as the BLAS reads it: a column-major matrix with leading dimension `ld`, used as it is
// (op N) or transposed (op T).
struct BlasOperand {
  bool transposed = false;
  int64_t ld = 0;
};

// The last two dims of X, a matrix of r x c (row-major indexing), as a column-major operand: rows
// contiguous -> the memory is X^T column-major (op N, ld = the row stride); columns contiguous -> X
// column-major (op T, ld = the column stride). nullopt: neither (the caller makes it contiguous).
// A dimension of size 1 has no stride to speak of; the leading dimension then only has to cover
// the other one, as the BLAS requires (ld >= max(1, rows of the stored matrix)).
inline std::optional<BlasOperand> blas_operand(const at::Tensor& X) {
  const int64_t d = X.dim(), r = X.size(d - 2), c = X.size(d - 1), sr = X.stride(d - 2), sc = X.stride(d - 1);
  if (c <= 1 || sc == 1) {
    const int64_t s = r <= 1 ? std::max<int64_t>(1, c) : sr;
    if (s >= std::max<int64_t>(1, c)) return BlasOperand{false, s};
  }
  if (r <= 1 || sr == 1) {
    const int64_t s = c <= 1 ? std::max<int64_t>(1, r) : sc;
    if (s >= std::max<int64_t>(1, r)) return BlasOperand{true, s};
  }
  return std::nullopt;
}

// A product as the arguments of cublasGemmEx / cublasGemmStridedBatchedEx, in cuBLAS's own terms:
// column-major C (m x n, ldc) = op(A) (m x k) op(B) (k x n) + beta C, A stored k x m when transa
// (else m x k) with leading dimension lda, B stored n x k when transb (else k x n) with ldb; `batch`
// products, the operands stride* elements apart (0: one matrix repeated; batch == 1: a plain,
// unbatched call). A row-major product C = A B is the column-major C^T = B^T A^T, so cuBLAS's A is
// the row-major B and its m the row-major n. csrc/cuda/blas.cuh passes these through unchanged;
// csrc/cpu/blas_emulation.h executes them as cuBLAS defines them.
struct CublasGemmArgs {
  bool transa = false, transb = false;
  int64_t m = 0, n = 0, k = 0;
  const at::Tensor* A = nullptr;
  int64_t lda = 0, strideA = 0;
  const at::Tensor* B = nullptr;
  int64_t ldb = 0, strideB = 0;
  int64_t ldc = 0, strideC = 0, batch = 1;
};

// C = A B + beta C for 2-D operands (m x k, k x n, m x n), or 3-D ones with one batch size (A or B
// may repeat one matrix over the batch: an expand()ed operand, batch stride 0), through
// `run(const CublasGemmArgs&, at::Tensor& C, float beta)`, which makes the one BLAS call. All three of
// one dtype. C is written where it is when its rows are contiguous and its batches do not overlap,
// else through a contiguous copy; A and B are read where they are when the BLAS can, else copied.
template <class Run>
void blas_gemm(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta, Run&& run) {
  const int64_t d = C.dim();
  TORCH_INTERNAL_ASSERT((d == 2 || d == 3) && A.dim() == d && B.dim() == d, "blas_gemm: 2-D or 3-D operands");
  TORCH_INTERNAL_ASSERT(A.scalar_type() == C.scalar_type() && B.scalar_type() == C.scalar_type(),
                        "blas_gemm: one dtype");
  const int64_t m = C.size(d - 2), n = C.size(d - 1), k = A.size(d - 1), batch = d == 3 ? C.size(0) : 1;
  TORCH_INTERNAL_ASSERT(A.size(d - 2) == m && B.size(d - 2) == k && B.size(d - 1) == n &&
                            (d == 2 || (A.size(0) == batch && B.size(0) == batch)),
                        "blas_gemm: shapes ", A.sizes(), " x ", B.sizes(), " -> ", C.sizes());
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // C = beta C without relying on the BLAS for an empty sum (nor on an empty operand's layout)
    if (beta == 0.f) {
      C.zero_();
    } else if (beta != 1.f) {
      C.mul_(beta);
    }
    return;
  }
  const std::optional<BlasOperand> c_view = blas_operand(C);
  if (!c_view || c_view->transposed || (d == 3 && batch > 1 && C.stride(0) < m * c_view->ld)) {
    at::Tensor tmp = C.contiguous();
    blas_gemm(tmp, A, B, beta, run);
    C.copy_(tmp);
    return;
  }
  // a repeated (stride-0) operand stays a view; anything else the BLAS cannot read is made contiguous
  auto readable = [](const at::Tensor& X, BlasOperand& op) {
    if (const auto v = blas_operand(X)) {
      op = *v;
      return X;
    }
    at::Tensor copy = X.contiguous();
    op = *blas_operand(copy);
    return copy;
  };
  BlasOperand op_a, op_b;
  const at::Tensor a = readable(A, op_a), b = readable(B, op_b);
  CublasGemmArgs g;  // column-major C^T (n x m) = op(b) (n x k) op(a) (k x m)
  g.transa = op_b.transposed;
  g.transb = op_a.transposed;
  g.m = n;
  g.n = m;
  g.k = k;
  g.A = &b;
  g.lda = op_b.ld;
  g.B = &a;
  g.ldb = op_a.ld;
  g.ldc = c_view->ld;
  g.batch = batch;
  if (batch > 1) {
    g.strideA = b.stride(0);
    g.strideB = a.stride(0);
    g.strideC = C.stride(0);
  }
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  TORCH_CHECK(m <= kMax && n <= kMax && k <= kMax && g.lda <= kMax && g.ldb <= kMax && g.ldc <= kMax && batch <= kMax,
              "a matrix product exceeds cuBLAS's 32-bit sizes (m ", m, ", n ", n, ", k ", k, ", batch ", batch,
              "): e.g. an RNN's T * B rows or a convolution's pixels must stay below 2^31 on CUDA");
  run(g, C, beta);
}

}  // namespace rnnkern
