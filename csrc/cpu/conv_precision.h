// fp32 precision of the CPU convolutions' matrix products.
//
// torch's CPU convolutions follow torch.backends.mkldnn.conv.fp32_precision. ATen's matrix products
// (at::mm and friends, which the GEMM paths here call) follow mkldnn.matmul.fp32_precision instead,
// and torch.set_float32_matmul_precision("medium") sets that one to bf16: on a CPU with AMX or
// AVX512-BF16 an fp32 convolution would then lose about three digits where torch's does not. So for
// the length of a convolution call the matmul setting takes the convolution's, and is restored
// after. The setting is process-wide: a depth count shared by all threads changes it once, on the
// way into the first call in flight, and restores it on the way out of the last. (A product another
// thread runs meanwhile sees the convolution's precision; with the defaults both are the same and
// nothing is ever changed.)
#pragma once
#include <ATen/Context.h>

#include <mutex>

namespace rnnkern {

class ConvMatmulPrecision {
 public:
  ConvMatmulPrecision() {
    const std::lock_guard<std::mutex> lock(state().mutex);
    State& s = state();
    if (s.depth++ > 0) return;
    at::Context& ctx = at::globalContext();
    s.saved = ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
    s.changed = false;
    if (s.saved != at::Float32Precision::BF16) return;  // only bf16 changes an fp32 product (the common case)
    s.changed = ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::CONV) != at::Float32Precision::BF16;
    if (s.changed) ctx.setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, at::Float32Precision::IEEE);
  }
  ~ConvMatmulPrecision() {
    const std::lock_guard<std::mutex> lock(state().mutex);
    State& s = state();
    if (--s.depth == 0 && s.changed)
      at::globalContext().setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, s.saved);
  }
  ConvMatmulPrecision(const ConvMatmulPrecision&) = delete;
  ConvMatmulPrecision& operator=(const ConvMatmulPrecision&) = delete;

 private:
  struct State {
    std::mutex mutex;
    int depth = 0;
    bool changed = false;
    at::Float32Precision saved = at::Float32Precision::NONE;
  };
  static State& state() {
    static State s;
    return s;
  }
};

}  // namespace rnnkern
