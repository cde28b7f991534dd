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
#include <ATen/MemoryOverlap.h>

#include "../blas_plan.h"
#include "../conv_gemm.h"  // AtenMatmul, env_switch

namespace rnnkern {

inline bool emulate_cublas() { return env_switch("RNNKERN_EMULATE_CUBLAS", "0", "1"); }

// op(X) of a column-major operand as a (batch, rows, cols) tensor: X's storage read from its data
// pointer as a matrix of rows x cols (cols x rows when transposed: then transposed back) with
// leading dimension ld, `batch` of them batch_stride elements apart; ld checked as cuBLAS does.
inline at::Tensor blas_read(const at::Tensor& X, bool transposed, int64_t rows, int64_t cols, int64_t ld,
                            int64_t batch, int64_t batch_stride, const char* name) {
  const int64_t stored_rows = transposed ? cols : rows, stored_cols = transposed ? rows : cols;
  TORCH_CHECK(ld >= std::max<int64_t>(1, stored_rows), "cuBLAS would reject ld", name, " = ", ld,
              " for a stored matrix of ", stored_rows, " rows");
  const at::Tensor stored = X.as_strided({batch, stored_rows, stored_cols}, {batch_stride, 1, ld}, X.storage_offset());
  return transposed ? stored.transpose(1, 2) : stored;
}

// blas_gemm's `run` on the CPU: cublasGemmEx / cublasGemmStridedBatchedEx with these arguments as
// cuBLAS defines the call, C (m x n, column-major) = op(A) op(B) + beta C.
inline void column_major_gemm(const CublasGemmArgs& g, at::Tensor& C, float beta) {
  for (const at::Tensor* X : {g.A, g.B}) {  // cuBLAS's result is undefined when C overlaps an operand
    const at::MemOverlapStatus overlap = at::get_overlap_status(C, *X);
    TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
                "cuBLAS would write C over one of its operands");
  }
  TORCH_CHECK(g.batch == 1 || g.strideC >= g.n * g.ldc, "cuBLAS batches of C would overlap");
  const at::Tensor a = blas_read(*g.A, g.transa, g.m, g.k, g.lda, g.batch, g.strideA, "a");  // m x k
  const at::Tensor b = blas_read(*g.B, g.transb, g.k, g.n, g.ldb, g.batch, g.strideB, "b");  // k x n
  TORCH_CHECK(g.ldc >= std::max<int64_t>(1, g.m), "cuBLAS would reject ldc = ", g.ldc);
  at::Tensor c = C.as_strided({g.batch, g.m, g.n}, {g.strideC, 1, g.ldc}, C.storage_offset());
  at::Tensor sum = at::matmul(a.to(at::kDouble), b.to(at::kDouble));
  if (beta != 0.f) sum.add_(c.to(at::kDouble), beta);  // beta == 0: C is not read (it may hold NaN)
  c.copy_(sum);
}

// C = A B + beta C through the cuBLAS call the CUDA build would make, emulated (CPU tensors).
struct EmulatedCublasGemm {
  void operator()(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta) const {
    TORCH_CHECK(C.is_cpu() && A.is_cpu() && B.is_cpu(), "the cuBLAS emulation takes CPU tensors");
    blas_gemm(C, A, B, beta, column_major_gemm);
  }
};

// conv_gemm.h's gemm on the CPU: ATen's BLAS, or the emulated cuBLAS call.
struct CpuGemm {
  bool emulate = emulate_cublas();
  void operator()(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta) const {
    if (emulate) {
      EmulatedCublasGemm{}(C, A, B, beta);
    } else {
      AtenMatmul{}(C, A, B, beta);
    }
  }
};

}  // namespace rnnkern
