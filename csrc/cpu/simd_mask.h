// The first n lanes of a 16-float AVX-512 vector as a mask (all for n >= 16, none for n <= 0):
// row and channel tails of the direct convolution kernels, and a row's columns.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace rnnkern {

__attribute__((target("avx512f"))) inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// The lanes of 16 consecutive columns from `first` on that lie in a row of `width` columns (the
// rest read padding; a masked load does not touch them).
__attribute__((target("avx512f"))) inline __mmask16 lanes_in_row(int64_t first, int64_t width) {
  return lanes(width - first) & __mmask16(~lanes(-first));
}

}  // namespace rnnkern
