// The CPU's matrix products where the CUDA build calls cuBLAS (the convolutions' GEMM route,
// the RNN's input projection and gradients), and, for the tests, an emulation of that cuBLAS call.
//
// RNNKERN_EMULATE_CUBLAS=1 (read per call; tests only) sends those CPU products through
// blas_plan.h, the planning the CUDA build does, and a column-major reference that reads memory
// the way the planned cuBLAS call would: each operand an as_strided view of its storage from its
// leading dimension and batch stride (a view past the storage raises), the BLAS's leading-
// dimension rules checked, the sums in fp64. Tests then check, without a GPU, the transpose flags,
// leading dimensions and batch strides that cuBLAS gets on CUDA for the very operands these paths
// build.
#pragma once
#include <ATen/ATen.h>

#include "../blas_plan.h"
#include "../conv_gemm.h"  // AtenMatmul, env_switch

namespace rnnkern {

inline bool emulate_cublas() { return env_switch("RNNKERN_EMULATE_CUBLAS", "0", "1"); }

// op(stored) of a column-major operand, as a (batch, rows, cols) tensor: the stored matrix is
// rows x cols (op N) or cols x rows (op T) at X's data pointer with leading dimension op.ld.
inline at::Tensor blas_read(const at::Tensor& X, const BlasOperand& op, int64_t rows, int64_t cols, int64_t batch,
                            int64_t batch_stride, const char* name) {
  const int64_t stored_rows = op.transposed ? cols : rows, stored_cols = op.transposed ? rows : cols;
  TORCH_CHECK(op.ld >= std::max<int64_t>(1, stored_rows), "cuBLAS would reject ld", name, " = ", op.ld,
              " for a stored matrix of ", stored_rows, " rows");
  const at::Tensor stored = X.as_strided({batch, stored_rows, stored_cols}, {batch_stride, 1, op.ld}, X.storage_offset());
  return op.transposed ? stored.transpose(1, 2) : stored;
}

// blas_gemm's `run` on the CPU: cublasGemmEx / cublasGemmStridedBatchedEx(op_b, op_a, n, m, k,
// b, ldb, a, lda, C, ldc) as cuBLAS defines it, C^T (n x m) = op(b) op(a) + beta C^T.
inline void column_major_gemm(const BlasGemm& g, at::Tensor& C, float beta) {
  TORCH_CHECK(g.batch == 1 || g.stride_c >= g.m * g.ldc, "cuBLAS batches of C would overlap");
  const at::Tensor b = blas_read(g.b, g.op_b, g.n, g.k, g.batch, g.stride_b, "b");  // n x k
  const at::Tensor a = blas_read(g.a, g.op_a, g.k, g.m, g.batch, g.stride_a, "a");  // k x m
  TORCH_CHECK(g.ldc >= std::max<int64_t>(1, g.n), "cuBLAS would reject ldc = ", g.ldc);
  at::Tensor c = C.as_strided({g.batch, g.n, g.m}, {g.stride_c, 1, g.ldc}, C.storage_offset());
  at::Tensor sum = at::matmul(b.to(at::kDouble), a.to(at::kDouble));
  if (beta != 0.f) sum.add_(c.to(at::kDouble), beta);  // beta == 0: C is not read (it may hold NaN)
  c.copy_(sum);
}

// conv_gemm.h's gemm on the CPU: ATen's BLAS, or the emulated cuBLAS call.
struct CpuGemm {
  bool emulate = emulate_cublas();
  void operator()(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta) const {
    if (emulate) {
      blas_gemm(C, A, B, beta, column_major_gemm);
    } else {
      AtenMatmul{}(C, A, B, beta);
    }
  }
};

}  // namespace rnnkern
