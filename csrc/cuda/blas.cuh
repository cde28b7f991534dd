// Matrix products on cuBLAS for the kernels' host code (csrc/cuda/rnn.cu, csrc/cuda/conv.cu).
//
// Why not at::mm: the products here follow torch.backends.cudnn.allow_tf32 (the flag of the cuDNN
// ops they replace) rather than the matmul flag, and they are deterministic on one stream, so they
// must not trip at::mm's "cuBLAS is not deterministic without CUBLAS_WORKSPACE_CONFIG" alert under
// torch.use_deterministic_algorithms (torch's own cuDNN convolutions do not). 16-bit inputs
// accumulate in fp32 (CUBLAS_COMPUTE_32F), split-K partial sums included
// (CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION, which torch's handle leaves off by default:
// a grad_weight reduces over every pixel). fp32 without TF32 is CUBLAS_COMPUTE_32F with the
// handle's TF32 math mode cleared for the call: torch sets that mode from the matmul TF32 flag,
// which plain 32F would follow (torch's own NoTF32Guard does the same; CUBLAS_COMPUTE_32F_PEDANTIC
// would also be true fp32, but cuBLAS documents it as a debugging mode that may run slower).
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>

#include "../blas_plan.h"

namespace rnnkern {

// The handle's math mode for one call's scope, then restored (torch's handle is shared):
// for fp32 in true fp32, the TF32 mode cleared; for fp16 / bf16, split-K partial sums kept in fp32.
// The compute type to pass with it is blas_compute_type's.
class ScopedMathMode {
 public:
  ScopedMathMode(cublasHandle_t handle, cudaDataType_t type, bool tf32) : handle_(handle) {
    TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle_, &saved_));
    constexpr int kModeBits = 0xf;  // CUBLAS_DEFAULT / TENSOR_OP / PEDANTIC / TF32_TENSOR_OP; flags above
    int wanted = saved_;
    if (type == CUDA_R_32F && !tf32) wanted = (wanted & ~kModeBits) | CUBLAS_DEFAULT_MATH;
    if (type == CUDA_R_16F || type == CUDA_R_16BF) wanted |= CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    on_ = wanted != static_cast<int>(saved_);
    if (on_) TORCH_CUDABLAS_CHECK(cublasSetMathMode(handle_, static_cast<cublasMath_t>(wanted)));
  }
  ~ScopedMathMode() {
    if (on_) cublasSetMathMode(handle_, saved_);  // (no throwing from a destructor)
  }
  ScopedMathMode(const ScopedMathMode&) = delete;
  ScopedMathMode& operator=(const ScopedMathMode&) = delete;

 private:
  cublasHandle_t handle_;
  bool on_ = false;
  cublasMath_t saved_ = CUBLAS_DEFAULT_MATH;
};

// The compute type for inputs of `type`: fp32 accumulation for fp32 / fp16 / bf16 (fp32 in TF32
// when `tf32`), fp64 for fp64. Used with ScopedMathMode.
inline cublasComputeType_t blas_compute_type(cudaDataType_t type, bool tf32) {
  if (type == CUDA_R_64F) return CUBLAS_COMPUTE_64F;
  return type == CUDA_R_32F && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// C = A B + beta C (blas_plan.h's blas_gemm: 2-D, or 3-D batched where A or B may repeat one
// matrix; C row-major or copied) as one cublasGemmEx / cublasGemmStridedBatchedEx call on the
// current stream. fp32 / fp64 / fp16 / bf16, all three of one dtype; fp32 in TF32 when `tf32`.
inline void cublas_gemm(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta, bool tf32) {
  blas_gemm(C, A, B, beta, [tf32](const CublasGemmArgs& g, at::Tensor& C, float beta) {
    cudaDataType_t type;
    switch (C.scalar_type()) {
      case at::kFloat: type = CUDA_R_32F; break;
      case at::kDouble: type = CUDA_R_64F; break;
      case at::kHalf: type = CUDA_R_16F; break;
      case at::kBFloat16: type = CUDA_R_16BF; break;
      default: TORCH_CHECK(false, "cublas_gemm: unsupported dtype ", C.scalar_type());
    }
    const cublasComputeType_t compute = blas_compute_type(type, tf32);
    // alpha / beta in the compute type: double for fp64, float otherwise
    const double alpha64 = 1.0, beta64 = beta;
    const float alpha32 = 1.f, beta32 = beta;
    const void* alpha = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&alpha64) : &alpha32;
    const void* beta_p = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&beta64) : &beta32;
    cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
    const ScopedMathMode math_mode(handle, type, tf32);
    const cublasOperation_t transa = g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, transb = g.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
    const int lda = static_cast<int>(g.lda), ldb = static_cast<int>(g.ldb), ldc = static_cast<int>(g.ldc);
    if (g.batch == 1) {
      TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, transa, transb, m, n, k, alpha, g.A->const_data_ptr(), type, lda,
                                        g.B->const_data_ptr(), type, ldb, beta_p, C.data_ptr(), type, ldc, compute,
                                        CUBLAS_GEMM_DEFAULT));
    } else {
      TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, g.A->const_data_ptr(),
                                                      type, lda, g.strideA, g.B->const_data_ptr(), type, ldb,
                                                      g.strideB, beta_p, C.data_ptr(), type, ldc, g.strideC,
                                                      static_cast<int>(g.batch), compute, CUBLAS_GEMM_DEFAULT));
    }
  });
}

}  // namespace rnnkern
