// fp32 precision of the CPU convolutions' matrix products.
//
// torch's CPU convolutions follow torch.backends.mkldnn.conv.fp32_precision. ATen's matrix products
// (at::mm and friends, which the GEMM paths here call) follow mkldnn.matmul.fp32_precision instead,
// and torch.set_float32_matmul_precision("medium") sets that one to bf16: on a CPU with AMX or
// AVX512-BF16 an fp32 convolution would then lose about three digits where torch's does not. So for
// the length of a convolution call the matmul setting takes the convolution's, and is restored
// after. The setting is process-wide: a depth count shared by all threads changes it once, on the
// way into the first call in flight, and restores it on the way out of the last. With the defaults
// both settings are the same and nothing is ever changed. Otherwise, while a convolution runs:
//  * a product another thread runs sees the convolution's precision (README: threads);
//  * a bf16 / tf32 setting the user makes meanwhile stands: the way out restores only while the
//    setting is still the IEEE one it made (an IEEE setting of the user's it cannot tell apart);
//  * a process forked meanwhile (its convolutions' threads do not exist in the child) starts with
//    the saved setting back and the count at zero (pthread_atfork; the lock is held across fork).
#pragma once
#include <ATen/Context.h>
#include <pthread.h>

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
    if (--s.depth == 0 && s.changed) restore(s);
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
    static const int registered = pthread_atfork([] { s.mutex.lock(); }, [] { s.mutex.unlock(); }, [] {
      if (s.depth > 0 && s.changed) restore(s);  // the calls in flight belong to threads the child lacks
      s.depth = 0;
      s.changed = false;
      s.mutex.unlock();
    });
    (void)registered;
    return s;
  }
  // The saved setting back, unless someone set another since ours (theirs stands).
  static void restore(State& s) {
    at::Context& ctx = at::globalContext();
    if (ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL) == at::Float32Precision::IEEE)
      ctx.setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, s.saved);
    s.changed = false;
  }
};

}  // namespace rnnkern
