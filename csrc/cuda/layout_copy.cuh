// Copies between NCHW and channels_last on CUDA, for the NCHW operands that conv.cu runs on its
// channels_last kernels (nchw_via_channels_last). Per image such a copy is the transpose of a
// (C x P) matrix, P = H x W pixels, or back. ATen's strided copy reads one side across a stride
// of P elements: on an H200 the copies around the bf16 / TF32 N8 256->256 64x64 convolutions
// took ~0.7 TB/s (bench/NOTES.md, twenty-fourth session). Here a block moves a 32 x 32 tile
// through shared memory: it reads along the source's rows and writes along the destination's,
// both coalesced, and the tile's padded rows keep the transposed reads off shared bank conflicts.
//
// RNNKERN_CONV_LAYOUT_COPY=kernel|aten (read per call; unset: aten until this kernel has run on a
// GPU) picks it or ATen's copy. Where it does not apply (other layouts, element sizes, a grid
// past 2^31 - 1 blocks) ATen's copy runs.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>

#include "../conv_common.h"

namespace rnnkern {
namespace layout_cuda {

constexpr int kTile = 32, kTileRows = 8;  // a 32 x 8 block moves one 32 x 32 tile, 4 elements a thread

// dst[n][s][r] = src[n][r][s] for r < R, s < S. T holds the elements' bits (2, 4 or 8 bytes);
// block b is tile (n, b / tiles_s % tiles_r, b % tiles_s) of the source.
template <typename T>
__global__ void __launch_bounds__(kTile * kTileRows)
    batched_transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t R, int64_t S, int64_t tiles_r,
                             int64_t tiles_s) {
  // rows of 33 elements (34 for 2-byte ones: 17 words) put a column's 32 elements in 32 banks
  __shared__ T tile[kTile][kTile + (sizeof(T) == 2 ? 2 : 1)];
  const int64_t b = blockIdx.x;
  const int64_t n = b / (tiles_r * tiles_s);
  const int64_t r0 = b / tiles_s % tiles_r * kTile, s0 = b % tiles_s * kTile;
  const T* img = src + n * R * S;
  T* out = dst + n * R * S;
  const int tx = threadIdx.x, ty = threadIdx.y;
#pragma unroll
  for (int i = ty; i < kTile; i += kTileRows)  // a warp reads 32 consecutive s of one row r
    if (r0 + i < R && s0 + tx < S) tile[i][tx] = img[(r0 + i) * S + s0 + tx];
  __syncthreads();
#pragma unroll
  for (int i = ty; i < kTile; i += kTileRows)  // ... and writes 32 consecutive r of one row s
    if (s0 + i < S && r0 + tx < R) out[(s0 + i) * R + r0 + tx] = tile[tx][i];
}

template <int kBytes> struct Bits;
template <> struct Bits<2> { using type = uint16_t; };
template <> struct Bits<4> { using type = uint32_t; };
template <> struct Bits<8> { using type = uint64_t; };

inline bool kernel_wanted() { return env_switch("RNNKERN_CONV_LAYOUT_COPY", "aten", "kernel", /*unset=*/false); }

// dst[n] = src[n]^T for N images of R x S elements (nothing to do when empty); false, nothing
// launched, where the kernel does not take it: a grid past 2^31 - 1 blocks, other element sizes.
inline bool batched_transpose(const void* src, void* dst, int64_t N, int64_t R, int64_t S, int64_t element_size) {
  if (N * R * S == 0) return true;
  const int64_t tiles_r = (R + kTile - 1) / kTile, tiles_s = (S + kTile - 1) / kTile;
  if (tiles_r * tiles_s > (int64_t{1} << 31) / N - 1) return false;
  const dim3 grid(static_cast<unsigned>(N * tiles_r * tiles_s)), block(kTile, kTileRows);
  const auto run = [&](auto bits) {
    using T = decltype(bits);
    batched_transpose_kernel<T><<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(
        static_cast<const T*>(src), static_cast<T*>(dst), R, S, tiles_r, tiles_s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  switch (element_size) {
    case 2: run(Bits<2>::type{}); return true;
    case 4: run(Bits<4>::type{}); return true;
    case 8: run(Bits<8>::type{}); return true;
    default: return false;
  }
}

// t as a dense channels_last tensor: t itself when it is one, else a copy (the transpose kernel
// from dense NCHW when RNNKERN_CONV_LAYOUT_COPY=kernel, else ATen's).
inline at::Tensor to_channels_last(const at::Tensor& t) {
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t;
  if (t.dim() == 4 && t.is_contiguous() && kernel_wanted()) {
    at::Tensor out = at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::ChannelsLast));
    // per image (C x HW) -> (HW x C)
    if (batched_transpose(t.const_data_ptr(), out.mutable_data_ptr(), t.size(0), t.size(1), t.size(2) * t.size(3),
                          t.element_size()))
      return out;
  }
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

// dst <- src, same sizes and dtype: the transpose kernel when dst is dense NCHW, src dense
// channels_last and RNNKERN_CONV_LAYOUT_COPY=kernel, else ATen's copy.
inline void copy_to_nchw(at::Tensor& dst, const at::Tensor& src) {
  TORCH_INTERNAL_ASSERT(dst.sizes() == src.sizes() && dst.scalar_type() == src.scalar_type());
  if (dst.dim() == 4 && dst.is_contiguous() && src.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      !src.is_contiguous() && kernel_wanted() &&
      // per image (HW x C) -> (C x HW)
      batched_transpose(src.const_data_ptr(), dst.mutable_data_ptr(), src.size(0), src.size(2) * src.size(3),
                        src.size(1), src.element_size()))
    return;
  dst.copy_(src);
}

}  // namespace layout_cuda
}  // namespace rnnkern
