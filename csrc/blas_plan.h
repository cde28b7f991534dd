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

// One product in the BLAS's column-major terms. Row-major C (m x n) = A B is column-major
// C^T (n x m) = op(b) (n x k) op(a) (k x m), so b comes first:
//   gemm(op_b, op_a, n, m, k, b, op_b.ld, a, op_a.ld, C, ldc), `batch` times, the operands
//   `stride_*` elements apart (0: one matrix repeated; batch == 1: a plain, unbatched call).
struct BlasGemm {
  at::Tensor a, b;  // A and B as the BLAS reads them: views of A and B, or contiguous copies
  BlasOperand op_a, op_b;
  int64_t ldc = 0;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// A plan as the arguments of cublasGemmEx / cublasGemmStridedBatchedEx, in cuBLAS's own terms:
// column-major C (m x n, ldc) = op(A) (m x k) op(B) (k x n) + beta C, A stored k x m when transa
// (else m x k) with leading dimension lda, B stored n x k when transb (else k x n) with ldb; `batch`
// products, the operands stride* elements apart. A plan's row-major product is the column-major
// C^T = B^T A^T, so cuBLAS's A is the plan's b and its m the plan's n. csrc/cuda/blas.cuh passes
// these through unchanged; csrc/cpu/blas_emulation.h executes them as cuBLAS defines them.
struct CublasGemmArgs {
  bool transa = false, transb = false;
  int64_t m = 0, n = 0, k = 0;
  const at::Tensor* A = nullptr;
  int64_t lda = 0, strideA = 0;
  const at::Tensor* B = nullptr;
  int64_t ldb = 0, strideB = 0;
  int64_t ldc = 0, strideC = 0, batch = 1;
};

inline CublasGemmArgs cublas_args(const BlasGemm& g) {
  CublasGemmArgs c;
  c.transa = g.op_b.transposed;
  c.transb = g.op_a.transposed;
  c.m = g.n;
  c.n = g.m;
  c.k = g.k;
  c.A = &g.b;
  c.lda = g.op_b.ld;
  c.strideA = g.stride_b;
  c.B = &g.a;
  c.ldb = g.op_a.ld;
  c.strideB = g.stride_a;
  c.ldc = g.ldc;
  c.strideC = g.stride_c;
  c.batch = g.batch;
  return c;
}

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
  BlasGemm g;
  g.m = C.size(d - 2);
  g.n = C.size(d - 1);
  g.k = A.size(d - 1);
  g.batch = d == 3 ? C.size(0) : 1;
  TORCH_INTERNAL_ASSERT(A.size(d - 2) == g.m && B.size(d - 2) == g.k && B.size(d - 1) == g.n &&
                            (d == 2 || (A.size(0) == g.batch && B.size(0) == g.batch)),
                        "blas_gemm: shapes ", A.sizes(), " x ", B.sizes(), " -> ", C.sizes());
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.k == 0) {  // C = beta C without relying on the BLAS for an empty sum (nor on an empty operand's layout)
    if (beta == 0.f) {
      C.zero_();
    } else if (beta != 1.f) {
      C.mul_(beta);
    }
    return;
  }
  const std::optional<BlasOperand> c_view = blas_operand(C);
  if (!c_view || c_view->transposed || (d == 3 && g.batch > 1 && C.stride(0) < g.m * c_view->ld)) {
    at::Tensor tmp = C.contiguous();
    blas_gemm(tmp, A, B, beta, run);
    C.copy_(tmp);
    return;
  }
  g.ldc = c_view->ld;
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
  g.a = readable(A, g.op_a);
  g.b = readable(B, g.op_b);
  if (d == 3 && g.batch > 1) {
    g.stride_a = g.a.stride(0);
    g.stride_b = g.b.stride(0);
    g.stride_c = C.stride(0);
  }
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  TORCH_CHECK(g.m <= kMax && g.n <= kMax && g.k <= kMax && g.op_a.ld <= kMax && g.op_b.ld <= kMax && g.ldc <= kMax &&
                  g.batch <= kMax,
              "a matrix product exceeds cuBLAS's 32-bit sizes");
  run(cublas_args(g), C, beta);
}

}  // namespace rnnkern
