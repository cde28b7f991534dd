// fp32 copies between channels_last (N, H, W, C) and NCHW for tensors with few channels, on
// AVX-512, for conv.cpp's narrow channels_last layers (kNarrowCopies). ATen's strided copy moves
// such a tensor at ~8 GB/s on one core (an (HW x C) -> (C x HW) transpose per image, C of 2-32);
// here each output vector of 16 floats is one gather from the other layout and one contiguous store.
// Called only where the CPU has AVX-512 (conv.cpp's cpu_has_avx512).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>

#include "simd_mask.h"

namespace rnnkern {
namespace layout {

// dst (N, C, P) <- src (N, P, C), P pixels an image, for images and pixel ranges [p0, p1).
__attribute__((target("avx512f"))) inline void nhwc_to_nchw_range(const float* src, float* dst, int64_t C,
                                                                   int64_t P, int64_t n, int64_t p0, int64_t p1) {
  const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(static_cast<int>(C)));
  const float* s = src + n * P * C;
  float* d = dst + n * C * P;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = p0; p < p1; p += 16) {
      const __mmask16 m = lanes(p1 - p);  // lane i: pixel p + i, src[(p + i) C + c]
      _mm512_mask_storeu_ps(d + c * P + p, m,
                            _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, step, s + p * C + c, 4));
    }
}

// dst (N, P, C) <- src (N, C, P): 16 consecutive dst floats, element e = (pixel e / C, channel e % C),
// gathered from src[(e % C) P + e / C]. The lanes' offsets from the block's first pixel depend on
// the block's first channel alone: one table row for each of the C (<= 16) channels it can start on.
__attribute__((target("avx512f"))) inline void nchw_to_nhwc_range(const float* src, float* dst, int64_t C,
                                                                   int64_t P, int64_t n, int64_t e0, int64_t e1) {
  alignas(64) int32_t table[16][16];
  for (int64_t c0 = 0; c0 < C; ++c0)
    for (int i = 0; i < 16; ++i) table[c0][i] = static_cast<int32_t>((c0 + i) % C * P + (c0 + i) / C);
  const float* s = src + n * C * P;
  float* d = dst + n * P * C;
  for (int64_t e = e0; e < e1; e += 16) {
    const __mmask16 m = lanes(e1 - e);
    const __m512i off = _mm512_load_si512(table[e % C]);
    _mm512_mask_storeu_ps(d + e, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, off, s + e / C, 4));
  }
}

// Whether these copies take a tensor of C channels and P pixels an image: C of 2-16 (the second
// copy's offset table; one channel is no transpose at all) and offsets within 32 bits.
inline bool applies(int64_t C, int64_t P) { return C >= 2 && C <= 16 && C * P < (int64_t{1} << 31); }

// A dense NCHW fp32 copy of the dense channels_last fp32 tensor t (N, C, H, W).
inline at::Tensor to_nchw(const at::Tensor& t) {
  const int64_t N = t.size(0), C = t.size(1), P = t.size(2) * t.size(3);
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
  const float* s = t.const_data_ptr<float>();
  float* d = out.mutable_data_ptr<float>();
  const int64_t chunk = 4096;  // pixels a task
  const int64_t per = (P + chunk - 1) / chunk;
  at::parallel_for(0, N * per, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      nhwc_to_nchw_range(s, d, C, P, i / per, (i % per) * chunk, std::min(P, (i % per + 1) * chunk));
  });
  return out;
}

// dst (N, C, H, W) channels_last dense <- src the same shape, NCHW dense, fp32.
inline void copy_to_channels_last(const at::Tensor& src, at::Tensor& dst) {
  const int64_t N = src.size(0), C = src.size(1), P = src.size(2) * src.size(3);
  const float* s = src.const_data_ptr<float>();
  float* d = dst.mutable_data_ptr<float>();
  const int64_t chunk = 4096 * C;  // elements a task, a multiple of C
  const int64_t per = (P * C + chunk - 1) / chunk;
  at::parallel_for(0, N * per, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      nchw_to_nhwc_range(s, d, C, P, i / per, (i % per) * chunk, std::min(P * C, (i % per + 1) * chunk));
  });
}

}  // namespace layout
}  // namespace rnnkern
