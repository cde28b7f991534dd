// Matrix products on cuBLAS for the kernels' host code (csrc/cuda/rnn.cu, csrc/cuda/conv.cu).
//
// Why not at::mm: the products here follow torch.backends.cudnn.allow_tf32 (the flag of the cuDNN
// ops they replace) rather than the matmul flag, and they are deterministic on one stream, so they
// must not trip at::mm's "cuBLAS is not deterministic without CUBLAS_WORKSPACE_CONFIG" alert under
// torch.use_deterministic_algorithms (torch's own cuDNN convolutions do not). 16-bit inputs
// accumulate in fp32 (CUBLAS_COMPUTE_32F), split-K partial sums included
// (CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION, which torch's handle leaves off by default:
// a grad_weight reduces over every pixel). fp32 without TF32 is CUBLAS_COMPUTE_32F_PEDANTIC: torch
// sets its handle's math mode from the matmul TF32 flag, which plain 32F would follow.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>

#include <algorithm>
#include <limits>

namespace rnnkern {

// The handle's math mode with `extra` added for one scope, then restored (torch's handle is shared).
class ScopedMathMode {
 public:
  ScopedMathMode(cublasHandle_t handle, bool on, cublasMath_t extra) : handle_(handle), on_(on) {
    if (!on_) return;
    TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle_, &saved_));
    TORCH_CUDABLAS_CHECK(cublasSetMathMode(handle_, static_cast<cublasMath_t>(saved_ | extra)));
  }
  ~ScopedMathMode() {
    if (on_) cublasSetMathMode(handle_, saved_);  // (no throwing from a destructor)
  }
  ScopedMathMode(const ScopedMathMode&) = delete;
  ScopedMathMode& operator=(const ScopedMathMode&) = delete;

 private:
  cublasHandle_t handle_;
  bool on_;
  cublasMath_t saved_ = CUBLAS_DEFAULT_MATH;
};

// The last two dims of X, a matrix of r x c (row-major indexing), as a cuBLAS column-major
// operand: rows contiguous -> the memory is X^T column-major (op N); columns contiguous -> X
// column-major (op T). False: neither (the caller makes it contiguous).
inline bool blas_view(const at::Tensor& X, cublasOperation_t* op, int64_t* ld) {
  const int64_t d = X.dim(), r = X.size(d - 2), c = X.size(d - 1), sr = X.stride(d - 2), sc = X.stride(d - 1);
  if (c <= 1 || sc == 1) {
    const int64_t s = r <= 1 ? std::max<int64_t>(1, c) : sr;
    if (s >= std::max<int64_t>(1, c)) {
      *op = CUBLAS_OP_N;
      *ld = s;
      return true;
    }
  }
  if (r <= 1 || sr == 1) {
    const int64_t s = c <= 1 ? std::max<int64_t>(1, r) : sc;
    if (s >= std::max<int64_t>(1, r)) {
      *op = CUBLAS_OP_T;
      *ld = s;
      return true;
    }
  }
  return false;
}

// C = A B + beta C for 2-D operands (m x k, k x n, m x n), or 3-D ones with one batch size: a
// strided batched product, where A or B may repeat one matrix over the batch (an expand()ed
// operand, batch stride 0). fp32 / fp64 / fp16 / bf16, all three of one dtype; fp32 in TF32 when
// `tf32`. C must be row-major (rows contiguous); A and B any strided or transposed view (others
// are copied first).
inline void cublas_gemm(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta, bool tf32) {
  const int64_t d = C.dim();
  TORCH_INTERNAL_ASSERT((d == 2 || d == 3) && A.dim() == d && B.dim() == d, "cublas_gemm: 2-D or 3-D operands");
  TORCH_INTERNAL_ASSERT(A.scalar_type() == C.scalar_type() && B.scalar_type() == C.scalar_type(),
                        "cublas_gemm: one dtype");
  const int64_t m = C.size(d - 2), n = C.size(d - 1), k = A.size(d - 1), batch = d == 3 ? C.size(0) : 1;
  TORCH_INTERNAL_ASSERT(A.size(d - 2) == m && B.size(d - 2) == k && B.size(d - 1) == n &&
                            (d == 2 || (A.size(0) == batch && B.size(0) == batch)),
                        "cublas_gemm: shapes ", A.sizes(), " x ", B.sizes(), " -> ", C.sizes());
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // C = beta C without relying on cuBLAS for an empty sum (nor on an empty operand's layout)
    if (beta == 0.f) C.zero_();
    return;
  }
  cublasOperation_t op_c, op_a, op_b;
  int64_t ldc, lda, ldb;
  if (!blas_view(C, &op_c, &ldc) || op_c != CUBLAS_OP_N || (d == 3 && batch > 1 && C.stride(0) < m * ldc)) {
    at::Tensor tmp = C.contiguous();
    cublas_gemm(tmp, A, B, beta, tf32);
    C.copy_(tmp);
    return;
  }
  // a repeated (stride-0) operand stays a view; anything else cuBLAS cannot read is made contiguous
  const at::Tensor a = blas_view(A, &op_a, &lda) ? A : A.contiguous();
  const at::Tensor b = blas_view(B, &op_b, &ldb) ? B : B.contiguous();
  if (!a.is_same(A)) blas_view(a, &op_a, &lda);
  if (!b.is_same(B)) blas_view(b, &op_b, &ldb);
  const int64_t sa = d == 3 ? a.stride(0) : 0, sb = d == 3 ? b.stride(0) : 0, sc = d == 3 ? C.stride(0) : 0;
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  TORCH_CHECK(m <= kMax && n <= kMax && k <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax && batch <= kMax,
              "a matrix product exceeds cuBLAS's 32-bit sizes");

  cudaDataType_t type;
  cublasComputeType_t compute;
  switch (C.scalar_type()) {
    case at::kFloat:
      type = CUDA_R_32F;
      compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F_PEDANTIC;
      break;
    case at::kDouble: type = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; break;
    case at::kHalf: type = CUDA_R_16F; compute = CUBLAS_COMPUTE_32F; break;
    case at::kBFloat16: type = CUDA_R_16BF; compute = CUBLAS_COMPUTE_32F; break;
    default: TORCH_CHECK(false, "cublas_gemm: unsupported dtype ", C.scalar_type());
  }
  // alpha / beta in the compute type: double for fp64, float otherwise
  const double alpha64 = 1.0, beta64 = beta;
  const float alpha32 = 1.f, beta32 = beta;
  const void* alpha = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta_p = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&beta64) : &beta32;
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  const ScopedMathMode fp32_partials(handle, type == CUDA_R_16F || type == CUDA_R_16BF,
                                     CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  // row-major C (m x n) = A B  <=>  column-major C^T (n x m) = B^T A^T
  if (d == 2 || batch == 1) {
    TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, op_b, op_a, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                                      alpha, b.const_data_ptr(), type, static_cast<int>(ldb), a.const_data_ptr(), type,
                                      static_cast<int>(lda), beta_p, C.data_ptr(), type, static_cast<int>(ldc), compute,
                                      CUBLAS_GEMM_DEFAULT));
  } else {
    TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, op_b, op_a, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), alpha, b.const_data_ptr(),
        type, static_cast<int>(ldb), sb, a.const_data_ptr(), type, static_cast<int>(lda), sa, beta_p, C.data_ptr(),
        type, static_cast<int>(ldc), sc, static_cast<int>(batch), compute, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace rnnkern
