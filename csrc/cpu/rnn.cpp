// Fused vanilla RNN (Elman) on the CPU: the whole time loop in C++ (see csrc/rnn_driver.h).
//
// Two recurrence steps, chosen per call in use_avx512_step:
//  * ATen (rnn_driver.h's AtenRecurrence): one MKL GEMM + one activation per step; any dtype, any CPU.
//  * AVX-512 (this file), fp32: the per-step product is B x H x H with B tiny (8x256x256 is ~1 MFLOP),
//    where MKL reaches about half its large-GEMM rate (12.7 us, 82 GFLOP/s on one Sapphire Rapids
//    core vs 156-200 for 1024^3) and the separate activation pass re-reads the step. Here W_hh is packed once
//    per call into 32-column panels that stay in L1/L2 for all T steps, an (up to) 8 x 32 register
//    tile accumulates each output block in one pass over k, and the input projection, activation
//    (forward) or upstream gradient and activation derivative (BPTT) are applied before the one
//    store. Each output element is one sequential k-sum: deterministic and thread-count independent.
//
// The AVX-512 step packs W_hh each call, so short sequences (avx512_step_pays) take the ATen one.
// RNNKERN_RNN_PATH=general / avx512 forces a step; RNNKERN_DEBUG=1 logs the choice.
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <vector>

#include <ATen/Parallel.h>
#include <omp.h>

#include "../ops.h"
#include "../rnn_driver.h"
#include "blas_emulation.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define RNNKERN_CPU_AVX512 1
#include <immintrin.h>
#define AVX512_FN __attribute__((target("avx512f,fma")))
#else
#define RNNKERN_CPU_AVX512 0
#endif

namespace rnnkern {
namespace {

#if RNNKERN_CPU_AVX512
// GCC 12's AVX-512 intrinsics self-initialise their "undefined" source operand and then warn about
// it at every call (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

constexpr int64_t kPanel = 32;  // output columns per panel: two zmm accumulators per row
constexpr int kTileRows = 8;    // batch rows per tile: 16 accumulators + 2 weight vectors + 1 broadcast

// e^x for x in [0, 20]: 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2 (Cody-Waite split of
// ln 2), e^r by its Taylor series to r^7 (truncation < 1e-8 relative).
AVX512_FN inline __m512 exp_ps(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-6f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  for (float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

// tanh to a few ulp. |x| >= 0.5: 1 - 2 / (e^{2|x|} + 1) (no harmful cancellation there);
// |x| < 0.5: the odd Taylor series to x^15 (next term < 1e-8 relative). Saturates at |x| = 10
// (tanh(10) rounds to 1 in fp32, tanh(9) does not); NaN propagates (min returns its second
// operand on NaN). Measured: within 1.6 ulp of the correctly rounded result.
AVX512_FN inline __m512 tanh_ps(__m512 x) {
  const __m512 ax = _mm512_min_ps(_mm512_set1_ps(10.f), _mm512_abs_ps(x));
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 e = exp_ps(_mm512_add_ps(ax, ax));
  const __m512 large = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(e, one)));
  const __m512 x2 = _mm512_mul_ps(ax, ax);
  __m512 p = _mm512_set1_ps(-929569.f / 638512875);
  for (float c : {21844.f / 6081075, -1382.f / 155925, 62.f / 2835, -17.f / 315, 2.f / 15, -1.f / 3})
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(c));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(ax, x2), p, ax);
  const __m512 mag = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.5f), _CMP_LT_OQ), large, small);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), sign));
}

enum class Epilogue { kForward, kBackward };

// One register tile: rows [0, R) x the panel's 32 columns of  acc = a (R, K) . panel (K, 32).
//  kForward:  dst = act(dst + acc)                 dst holds the step's input projection
//  kBackward: dst = (addend + acc) * act'(h)       addend = upstream gradient, h = activation output
// m0 / m1 mask the two 16-column halves at the ragged end of H.
template <int R, Epilogue E, bool kRelu>
AVX512_FN void rnn_tile(const float* a, const float* panel, int64_t K, int64_t ld, const float* addend,
                        const float* h, float* dst, __mmask16 m0, __mmask16 m1) {
  __m512 acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w0 = _mm512_loadu_ps(panel + k * kPanel), w1 = _mm512_loadu_ps(panel + k * kPanel + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * ld + k]);
      acc[r][0] = _mm512_fmadd_ps(ar, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(ar, w1, acc[r][1]);
    }
  }
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const __mmask16 m = half ? m1 : m0;
      const int64_t off = r * ld + half * 16;
      __m512 v;
      if constexpr (E == Epilogue::kForward) {
        v = _mm512_add_ps(acc[r][half], _mm512_maskz_loadu_ps(m, dst + off));
        v = kRelu ? _mm512_max_ps(zero, v) : tanh_ps(v);
      } else {
        v = _mm512_add_ps(acc[r][half], _mm512_maskz_loadu_ps(m, addend + off));
        const __m512 y = _mm512_maskz_loadu_ps(m, h + off);
        // relu': torch's threshold_backward zeroes where h <= 0 only, so a NaN h passes v through
        v = kRelu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_NLE_UQ), v)
                  : _mm512_mul_ps(v, _mm512_fnmadd_ps(y, y, one));
      }
      _mm512_mask_storeu_ps(dst + off, m, v);
    }
  }
}

template <Epilogue E, bool kRelu>
AVX512_FN void rnn_panel(int64_t rows, const float* a, const float* panel, int64_t K, int64_t ld,
                         const float* addend, const float* h, float* dst, __mmask16 m0, __mmask16 m1) {
  for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
    const int64_t o = r0 * ld;
    const float* ad = addend ? addend + o : nullptr;
    const float* hh = h ? h + o : nullptr;
    switch (std::min<int64_t>(kTileRows, rows - r0)) {
#define RNNKERN_TILE(R) \
  case R:               \
    rnn_tile<R, E, kRelu>(a + o, panel, K, ld, ad, hh, dst + o, m0, m1); break;
      RNNKERN_TILE(1) RNNKERN_TILE(2) RNNKERN_TILE(3) RNNKERN_TILE(4)
      RNNKERN_TILE(5) RNNKERN_TILE(6) RNNKERN_TILE(7) RNNKERN_TILE(8)
#undef RNNKERN_TILE
    }
  }
}

// Packs M (H, H) as (P, H, 32): panel p holds columns [32p, 32p + 32) of M for every k, zero-padded
// past H, so a tile streams its weights contiguously. M = W_hh^T for the forward step (M[k][j] =
// W_hh[j][k]), M = W_hh for the reverse one.
//
// One pass, in 32 x 32 tiles: W_hh^T is a transposed view, and reading it column by column (as a
// strided copy_ into a zeroed buffer and a permute().contiguous() after it did) cost ~0.7 ms at
// H = 512 and ~2.7 ms at H = 1024 on one core, 10-100x a step at small batches (a one-token call
// while sampling a language model paid it every token).
//
// The panels live in a per-thread buffer that grows and is reused across calls (never shared: a call
// packs into it once and reads it until it returns): a fresh allocation of this size is an mmap
// whose pages fault in on every call, which cost more than the packing (~2 ms of 4 MB at H = 1024).
at::Tensor pack_panels(const at::Tensor& m) {
  const int64_t H = m.size(0), P = (H + kPanel - 1) / kPanel;
  thread_local std::vector<float> buffer;
  const size_t elements = static_cast<size_t>(P * H * kPanel);
  if (buffer.size() < elements) buffer.resize(elements);
  at::Tensor packed = at::from_blob(buffer.data(), {P, H, kPanel}, m.options());
  const float* src = m.const_data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  const int64_t sk = m.stride(0), sj = m.stride(1);
  float tile[kPanel][kPanel];  // [k][j], L1-resident
  for (int64_t p = 0; p < P; ++p) {
    const int64_t j0 = p * kPanel, n = std::min(kPanel, H - j0);
    for (int64_t k0 = 0; k0 < H; k0 += kPanel) {
      const int64_t kn = std::min(kPanel, H - k0);
      if (sj == 1) {  // rows of M are contiguous
        for (int64_t k = 0; k < kn; ++k)
          for (int64_t j = 0; j < n; ++j) tile[k][j] = src[(k0 + k) * sk + j0 + j];
      } else {  // columns are (M = W_hh^T): read each source row j in a contiguous run of k
        for (int64_t j = 0; j < n; ++j)
          for (int64_t k = 0; k < kn; ++k) tile[k][j] = src[(k0 + k) * sk + (j0 + j) * sj];
      }
      for (int64_t k = 0; k < kn; ++k) {
        float* out = dst + (p * H + k0 + k) * kPanel;
        std::memcpy(out, tile[k], n * sizeof(float));
        std::fill(out + n, out + kPanel, 0.f);
      }
    }
  }
  return packed;
}

// One step's operands: a (rows of h_{t-1} or dz_{t+1}), the upstream gradient and activation
// outputs (backward only) and the destination rows.
struct StepOperands {
  const float* a;
  const float* addend;
  const float* h;
  float* dst;
};

// The Step of csrc/rnn_driver.h's loops on the AVX-512 kernels (fp32, contiguous (T, B, H) buffers).
//
// Threads: step t + 1 needs all of step t, so threads can only split a step's panels and must meet
// once per step. A parallel region per step costs a few us (at::parallel_for), as much as a whole
// 8 x 256 x 256 step; so one OpenMP region spans the run of steps, each thread owns a fixed range
// of panels for all of them, and the threads meet at one barrier per step. Every output element
// is still one tile's sequential k-sum: the bits do not depend on the thread count.
struct Avx512Recurrence {
  at::Tensor h0, panels;  // h0 contiguous; panels of W_hh^T (forward) or W_hh (backward)
  int64_t B, H;
  bool relu;

  // For t in [t0, t1): out[t, :rows] = act(out[t, :rows] + h_{t-1}[:rows] W_hh^T)
  void forward(at::Tensor& out, int64_t t0, int64_t t1, int64_t rows) const {
    float* o = out.data_ptr<float>();
    const float* h_init = h0.const_data_ptr<float>();
    run(t0, t1, rows, /*backward=*/false, [&](int64_t t) {
      float* y = o + t * B * H;
      return StepOperands{t == 0 ? h_init : y - B * H, nullptr, nullptr, y};
    });
  }

  // For t = t1 - 1 down to t0: dz[t, :rows] = (grad_out[t, :rows] + dz[t+1, :rows] W_hh) * act'(out[t, :rows])
  void backward(at::Tensor& dz, const at::Tensor& grad_out, const at::Tensor& out, int64_t t0, int64_t t1,
                int64_t rows) const {
    float* d = dz.data_ptr<float>();
    const float* g = grad_out.const_data_ptr<float>();
    const float* y = out.const_data_ptr<float>();
    run(t0, t1, rows, /*backward=*/true, [&](int64_t t) {
      float* dt = d + t * B * H;
      return StepOperands{dt + B * H, g + t * B * H, y + t * B * H, dt};
    });
  }

  // Panels [p0, p1) of one step.
  void panels_of_step(int64_t p0, int64_t p1, int64_t rows, bool backward, const StepOperands& op) const {
    const float *a = op.a, *addend = op.addend, *h = op.h;
    float* dst = op.dst;
    const float* w = panels.const_data_ptr<float>();
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t j0 = p * kPanel, n = std::min(kPanel, H - j0);
      const __mmask16 m0 = n >= 16 ? 0xFFFF : (1u << n) - 1;
      const __mmask16 m1 = n >= 32 ? 0xFFFF : n > 16 ? (1u << (n - 16)) - 1 : 0;
      const float* wp = w + p * H * kPanel;
      const float* ad = addend ? addend + j0 : nullptr;
      const float* hh = h ? h + j0 : nullptr;
      if (backward) {
        (relu ? rnn_panel<Epilogue::kBackward, true> : rnn_panel<Epilogue::kBackward, false>)(
            rows, a, wp, H, H, ad, hh, dst + j0, m0, m1);
      } else {
        (relu ? rnn_panel<Epilogue::kForward, true> : rnn_panel<Epilogue::kForward, false>)(
            rows, a, wp, H, H, ad, hh, dst + j0, m0, m1);
      }
    }
  }

  // Steps [t0, t1) in order (descending for backward); operands(t) gives step t's StepOperands.
  template <class Operands>
  void run(int64_t t0, int64_t t1, int64_t rows, bool backward, const Operands& operands) const {
    const int64_t P = panels.size(0);
    auto step_at = [&](int64_t i) { return backward ? t1 - 1 - i : t0 + i; };
    // Below ~64k MACs a step is too short to share: a barrier round trip would be a large part of it.
    const int threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), P));
    if (threads < 2 || rows * H * H < (int64_t{1} << 16) || at::in_parallel_region()) {
      for (int64_t i = 0; i < t1 - t0; ++i) panels_of_step(0, P, rows, backward, operands(step_at(i)));
      return;
    }
#pragma omp parallel num_threads(threads)
    {
      const int id = omp_get_thread_num(), n = omp_get_num_threads();
      const int64_t p0 = P * id / n, p1 = P * (id + 1) / n;
      for (int64_t i = 0; i < t1 - t0; ++i) {
        panels_of_step(p0, p1, rows, backward, operands(step_at(i)));
#pragma omp barrier  // step t complete in every panel before any thread starts the next
      }
    }
  }
};

#pragma GCC diagnostic pop
#endif  // RNNKERN_CPU_AVX512

// Why the AVX-512 step cannot serve this dtype (nullptr when it can). Read per call, so tests
// and users can force the ATen step with RNNKERN_RNN_PATH=general.
const char* avx512_step_blocker(at::ScalarType dtype) {
  if (env_equals("RNNKERN_RNN_PATH", "general")) return "RNNKERN_RNN_PATH=general";
  if (dtype != at::kFloat) return "dtype is not float32";
#if RNNKERN_CPU_AVX512
  static const bool has_avx512 = __builtin_cpu_supports("avx512f");
  return has_avx512 ? nullptr : "CPU has no AVX-512";
#else
  return "built without the x86-64 AVX-512 kernels";
#endif
}

// Whether the AVX-512 step repays packing W_hh over T steps of B rows, from a cost model fitted on
// one core of the Sapphire Rapids VM (bench/NOTES.md, thirteenth session): packing costs ~0.7 ns per
// W_hh element; a forward step saves ~2 us + (0.02 + 0.0035 B) ns per element against the ATen step
// (break-even ~22 steps at B = 1 and H = 512, ~13 at B = 8, ~5 at B = 32), a backward step only
// ~4 us (break-even ~12 steps at H = 256, ~46 at H = 512). A one-token call while sampling a language
// model is far below either; the benchmark shapes (T = 256) far above.
bool avx512_step_pays(bool backward, int64_t T, int64_t B, int64_t H) {
  const double elements = static_cast<double>(H) * static_cast<double>(H);
  const double pack_us = 0.7e-3 * elements;
  const double saved_us_per_step =
      backward ? 4.0 : 2.0 + (0.02 + 0.0035 * static_cast<double>(B)) * 1e-3 * elements;
  return static_cast<double>(T) * saved_us_per_step >= pack_us;
}

// The step for this call: AVX-512 where it can run and pays for its packing (RNNKERN_RNN_PATH=avx512
// skips the second question: tests of the kernel on small shapes), else ATen's.
bool use_avx512_step(const char* op, bool backward, const at::Tensor& input, int64_t T, int64_t B, int64_t H) {
  const char* blocker = avx512_step_blocker(input.scalar_type());
  const bool forced = blocker == nullptr && env_equals("RNNKERN_RNN_PATH", "avx512");
  if (blocker == nullptr && !forced && !avx512_step_pays(backward, T, B, H))
    blocker = "too few steps to repay packing W_hh";
  if (debug_log_enabled()) {
    std::cerr << "[rnnkern] " << op << " (cpu): "
              << (blocker ? std::string("general step (") + blocker + ")"
                          : std::string("avx512 step (float32 on an AVX-512 CPU") + (forced ? ", forced)" : ")"))
              << "\n";
  }
  return blocker == nullptr;
}

}  // namespace

std::string rnn_cpu_step() {
  const char* blocker = avx512_step_blocker(at::kFloat);
  return blocker ? std::string("general (") + blocker + ")"
                 : "avx512 (float32 sequences long enough to repay packing W_hh; float64 takes the general step)";
}

namespace {
// fn(gemm) with the products through ATen, or (RNNKERN_EMULATE_CUBLAS=1, tests) through the
// cuBLAS call the CUDA build makes for them in TF32 (rnn.cu's Tf32Gemm), emulated.
template <typename Fn>
auto with_cpu_rnn_gemm(Fn&& fn) {
  return emulate_cublas() ? fn(BetaGemm<EmulatedCublasGemm>{}) : fn(AtenGemm{});
}

std::optional<at::Tensor> to_float(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> rnn_forward_cpu(const at::Tensor& input, const at::Tensor& hx,
                                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                   const std::optional<at::Tensor>& b_ih,
                                                   const std::optional<at::Tensor>& b_hh,
                                                   const std::optional<at::Tensor>& lengths, bool relu) {
  const RnnShapes s = check_rnn_args("rnn_forward", input, hx, w_ih, w_hh, b_ih, b_hh);
  const at::ScalarType dtype = input.scalar_type();
  TORCH_CHECK(at::isFloatingType(dtype), "rnn_forward: CPU kernels support floating-point inputs, got ", dtype);
  if (dtype != at::kFloat && dtype != at::kDouble) {  // bf16 / fp16: the recurrence in fp32, rounded once
    auto [out, h_n] = rnn_forward_cpu(input.to(at::kFloat), hx.to(at::kFloat), w_ih.to(at::kFloat),
                                      w_hh.to(at::kFloat), to_float(b_ih), to_float(b_hh), lengths, relu);
    return {out.to(dtype), h_n.to(dtype)};
  }
  const std::vector<int64_t> bs = batch_sizes("rnn_forward", s, lengths);
#if RNNKERN_CPU_AVX512
  if (s.T > 0 && s.B > 0 && use_avx512_step("rnn_forward", false, input, s.T, s.B, s.H)) {
    Avx512Recurrence step{hx.contiguous(), pack_panels(w_hh.t()), s.B, s.H, relu};
    return with_cpu_rnn_gemm([&](const auto& gemm) {
      return rnn_forward_loop(input, hx, w_ih, b_ih, b_hh, bs, lengths, step, gemm);
    });
  }
#endif
  return with_cpu_rnn_gemm(
      [&](const auto& gemm) { return rnn_forward_general(input, hx, w_ih, w_hh, b_ih, b_hh, bs, lengths, relu, gemm); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  const RnnShapes s = check_rnn_backward_args(grad_output, grad_hn, input, hx, w_ih, w_hh, output);
  const at::ScalarType dtype = input.scalar_type();
  if (dtype != at::kFloat && dtype != at::kDouble) {  // as the forward: fp32 inside, results rounded once
    const auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    auto [dx, dh, dw_ih, dw_hh, db] = rnn_backward_cpu(f(grad_output), f(grad_hn), f(input), f(hx), f(w_ih), f(w_hh),
                                                       f(output), lengths, relu, has_bias);
    return {dx.to(dtype), dh.to(dtype), dw_ih.to(dtype), dw_hh.to(dtype), db.to(dtype)};
  }
  const std::vector<int64_t> bs = batch_sizes("rnn_backward", s, lengths);
#if RNNKERN_CPU_AVX512
  if (s.T > 0 && s.B > 0 && use_avx512_step("rnn_backward", true, input, s.T, s.B, s.H)) {
    Avx512Recurrence step{hx, pack_panels(w_hh), s.B, s.H, relu};
    return with_cpu_rnn_gemm([&](const auto& gemm) {
      return rnn_backward_loop(grad_output.contiguous(), grad_hn, input, hx, w_ih, w_hh, output.contiguous(), bs,
                               relu, has_bias, step, gemm);
    });
  }
#endif
  return with_cpu_rnn_gemm([&](const auto& gemm) {
    return rnn_backward_general(grad_output, grad_hn, input, hx, w_ih, w_hh, output, bs, relu, has_bias, gemm);
  });
}

}  // namespace rnnkern
