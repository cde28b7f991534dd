// Max-unpooling (and nearest / bed-of-nails) on CUDA.
//
//  * gather (kernel == stride, no padding): one thread per window, reading its value and index
//    once and writing all of the window's outputs once. Threads walk the windows in the
//    output's memory order (w fastest for NCHW, c fastest for channels_last), so neighbouring
//    threads store neighbouring addresses and no zero-fill pass is needed.
//    The common SegNet case (2x2 windows, output exactly 2H x 2W, every tensor dense in the
//    output's layout) has its own kernel with 32-bit multiply-shift index math: the general
//    one's int64 divisions cost more instructions per window than the memory system needs
//    to move the window's 28 bytes (fp32) at full bandwidth. In NCHW with an even width a
//    thread takes two neighbouring windows (wider loads and stores; so does the backward).
//    An index that leaves its window (hand-built indices only) raises a flag. The checked call
//    reads the flags back and then reruns as the scatter; the asynchronous one launches a fix-up
//    kernel that reads the flag on the device, returns at once when it is clear, and otherwise
//    writes those elements one plane per warp in input order.
//  * scatter (any other geometry): deterministic in two passes. Pass 1 picks, per output
//    element, the LAST input element that targets it (integer atomicMax of the flat input
//    position: order-independent, hence deterministic, and the same rule as the CPU kernel);
//    pass 2 writes every output once from its winner.
//
// Bad indices never cause an out-of-bounds access: kernels bounds-check, drop out-of-range
// elements and raise a flag. With check_indices the host reads it once after the launches (one
// sync, the only one) and raises IndexError; without it, or under CUDA-graph capture, nothing is
// read back and the call stays asynchronous, as torch's own kernels are.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/cuda/CUDAGuard.h>

#include "../unpool_common.h"

namespace rnnkern {
namespace {

constexpr int kThreads = 256;

// Linear thread index -> (n, c, h, w) on an N x C x H x W grid in the memory order of the output.
__device__ __forceinline__ void decompose(int64_t i, bool channels_last, int64_t C, int64_t H, int64_t W,
                                          int64_t& n, int64_t& c, int64_t& h, int64_t& w) {
  if (channels_last) {
    c = i % C; i /= C; w = i % W; i /= W; h = i % H; n = i / H;
  } else {
    w = i % W; i /= W; h = i % H; i /= H; c = i % C; n = i / C;
  }
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 30));
}

template <typename scalar_t>
__global__ void unpool_gather_kernel(UnpoolGeometry g, bool channels_last, const scalar_t* __restrict__ in,
                                     Strides4 xs, const int64_t* __restrict__ idx, Strides4 is,
                                     scalar_t* __restrict__ out, Strides4 os, int* __restrict__ flags) {
  const int64_t WH = (g.OH + g.sh - 1) / g.sh, WW = (g.OW + g.sw - 1) / g.sw;
  const int64_t total = g.N * g.C * WH * WW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, wh, ww;
    decompose(i, channels_last, g.C, WH, WW, n, c, wh, ww);
    if (const int f = unpool_fill_window(g, in, xs, idx, is, out, os, n, c, wh, ww)) atomicOr(flags, f);
  }
}

using Div32 = at::cuda::detail::IntDivider<unsigned int>;

// Two / four adjacent elements loaded or stored at once.
template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T first, second;
};
template <typename T>
struct alignas(4 * sizeof(T)) Quad {
  T v[4];
};

// Where a 2x2 window's value goes: (th, tw) in {0, 1}^2; -1 nowhere, -2 every element
// (nearest). k is the max-pool index in its output plane (of `plane` elements, rows of OW), the
// window's top-left is (2h, 2w); an index outside the window or the plane raises its flag.
__device__ __forceinline__ void window_target(UnpoolMode mode, int64_t k, unsigned int h, unsigned int w,
                                              unsigned int OW, int64_t plane, int* flags, int& th, int& tw) {
  th = tw = -1;
  if (mode == UnpoolMode::kIndices) {
    const int64_t d = k - (int64_t{2} * h * OW + 2 * w);  // offset from the window's top-left
    if (k < 0 || k >= plane) {
      atomicOr(flags, kUnpoolIndexOutOfRange);
    } else if (d == 0 || d == 1 || d == OW || d == OW + 1) {
      th = d >= OW;
      tw = static_cast<int>(d - th * OW);
    } else {
      atomicOr(flags, kUnpoolIndexOutsideWindow);
    }
  } else {
    th = tw = mode == UnpoolMode::kBedOfNails ? 0 : -2;
  }
}

// The window's output element (r, c): its value where window_target put it, else zero.
template <typename scalar_t>
__device__ __forceinline__ scalar_t window_element(scalar_t v, int th, int tw, int r, int c) {
  return th == -2 || (th == r && tw == c) ? v : scalar_t(0);
}

// Input elements i, i + 1 (i even, loads aligned) of the pairs kernels: both values in one load,
// both indices in one 16-byte load, and where each goes in its window (window_target), the
// windows' top-left columns being w0 and w1 on row h.
template <typename scalar_t>
__device__ __forceinline__ Pair<scalar_t> load_pair(UnpoolMode mode, const scalar_t* __restrict__ in,
                                                    const int64_t* __restrict__ idx, unsigned int i, unsigned int h,
                                                    unsigned int w0, unsigned int w1, unsigned int OW, int64_t plane,
                                                    int* flags, int& th0, int& tw0, int& th1, int& tw1) {
  int64_t k0 = 0, k1 = 0;
  if (mode == UnpoolMode::kIndices) {
    const longlong2 k = *reinterpret_cast<const longlong2*>(idx + i);
    k0 = k.x;
    k1 = k.y;
  }
  window_target(mode, k0, h, w0, OW, plane, flags, th0, tw0);
  window_target(mode, k1, h, w1, OW, plane, flags, th1, tw1);
  return *reinterpret_cast<const Pair<scalar_t>*>(in + i);
}

// unpool_gather_kernel for 2x2 windows on dense tensors with OH = 2H, OW = 2W and fewer than 2^31
// output elements. Thread i takes input element i (so value and index are read at i):
// NCHW i = row * W + w with row = plane * H + h, channels_last i = (row * W + w) * C + c with
// row = n * H + h; the window's top-left output is then (2 row) * OW + 2 w (times C, plus c).
// NCHW stores each window row as one Pair. Same values and error flags as the general kernel.
template <typename scalar_t, bool kCL>
__global__ void unpool_gather2x2_kernel(UnpoolMode mode, unsigned int total, Div32 div_c, Div32 div_w, Div32 div_h,
                                        const scalar_t* __restrict__ in, const int64_t* __restrict__ idx,
                                        scalar_t* __restrict__ out, int* __restrict__ flags) {
  const unsigned int C = div_c.divisor, W = div_w.divisor, OW = 2 * W;
  const int64_t plane = int64_t{4} * div_h.divisor * W;
  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    unsigned int c = 0, q = i;
    if constexpr (kCL) {
      const auto qc = div_c.divmod(i);
      q = qc.div;
      c = qc.mod;
    }
    const auto rw = div_w.divmod(q);
    const unsigned int row = rw.div, w = rw.mod, h = div_h.mod(row);
    const scalar_t v = in[i];
    int th, tw;
    window_target(mode, mode == UnpoolMode::kIndices ? idx[i] : 0, h, w, OW, plane, flags, th, tw);
    const auto at = [&](int r, int c) { return window_element(v, th, tw, r, c); };
    if constexpr (kCL) {
      const unsigned int o = (2 * row * OW + 2 * w) * C + c;
      out[o] = at(0, 0);
      out[o + C] = at(0, 1);
      out[o + OW * C] = at(1, 0);
      out[o + OW * C + C] = at(1, 1);
    } else {
      const unsigned int o = 2 * row * OW + 2 * w;
      *reinterpret_cast<Pair<scalar_t>*>(out + o) = {at(0, 0), at(0, 1)};
      *reinterpret_cast<Pair<scalar_t>*>(out + o + OW) = {at(1, 0), at(1, 1)};
    }
  }
}

// unpool_gather2x2_kernel's NCHW case for even W, two horizontally neighbouring windows per
// thread: their values and indices in one 8- / 16-byte load each, each output row of the pair's
// four elements in one store (16 bytes in fp32). Half the memory instructions per window, twice
// the bytes in flight per thread. Same values and flags.
template <typename scalar_t>
__global__ void unpool_gather2x2_pairs_kernel(UnpoolMode mode, unsigned int pairs, Div32 div_w, Div32 div_h,
                                              const scalar_t* __restrict__ in, const int64_t* __restrict__ idx,
                                              scalar_t* __restrict__ out, int* __restrict__ flags) {
  const unsigned int W = div_w.divisor, OW = 2 * W;
  const int64_t plane = int64_t{4} * div_h.divisor * W;
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += gridDim.x * blockDim.x) {
    const unsigned int i = 2 * j;  // windows i, i + 1: one row (W even), columns w, w + 1
    const auto rw = div_w.divmod(i);
    const unsigned int row = rw.div, w = rw.mod, h = div_h.mod(row);
    int th0, tw0, th1, tw1;
    const Pair<scalar_t> v = load_pair(mode, in, idx, i, h, w, w + 1, OW, plane, flags, th0, tw0, th1, tw1);
    const unsigned int o = 2 * row * OW + 2 * w;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      *reinterpret_cast<Quad<scalar_t>*>(out + o + r * OW) = {
          {window_element(v.first, th0, tw0, r, 0), window_element(v.first, th0, tw0, r, 1),
           window_element(v.second, th1, tw1, r, 0), window_element(v.second, th1, tw1, r, 1)}};
    }
  }
}

// unpool_gather2x2_kernel's channels_last case for an even C, two neighbouring channels of one
// window per thread: values in one 4- / 8-byte load, both indices in one 16-byte load, each of
// the window's four output positions as one Pair store. A warp then moves 64 channels per
// instruction (the one-channel kernel: 32), as the NCHW pairs kernel does. Same values and flags.
template <typename scalar_t>
__global__ void unpool_gather2x2_cl_pairs_kernel(UnpoolMode mode, unsigned int pairs, Div32 div_c, Div32 div_w,
                                                 Div32 div_h, const scalar_t* __restrict__ in,
                                                 const int64_t* __restrict__ idx, scalar_t* __restrict__ out,
                                                 int* __restrict__ flags) {
  const unsigned int C = div_c.divisor, W = div_w.divisor, OW = 2 * W;
  const int64_t plane = int64_t{4} * div_h.divisor * W;
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += gridDim.x * blockDim.x) {
    const unsigned int i = 2 * j;  // channels c, c + 1 of one window (C even, so c is even)
    const auto qc = div_c.divmod(i);
    const auto rw = div_w.divmod(qc.div);
    const unsigned int c = qc.mod, row = rw.div, w = rw.mod, h = div_h.mod(row);
    int th0, tw0, th1, tw1;
    const Pair<scalar_t> v = load_pair(mode, in, idx, i, h, w, w, OW, plane, flags, th0, tw0, th1, tw1);
    const unsigned int o = (2 * row * OW + 2 * w) * C + c;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        *reinterpret_cast<Pair<scalar_t>*>(out + o + (r * OW + s) * C) = {
            window_element(v.first, th0, tw0, r, s), window_element(v.second, th1, tw1, r, s)};
      }
    }
  }
}

// The backward with indices on dense tensors (fewer than 2^31 elements): grad_input[i] =
// grad_output at its index within i's plane; one multiply-shift division (two channels_last).
template <typename scalar_t, bool kCL>
__global__ void unpool_backward_dense_kernel(unsigned int total, Div32 div_plane, Div32 div_c, int64_t out_plane,
                                             const scalar_t* __restrict__ go, const int64_t* __restrict__ idx,
                                             scalar_t* __restrict__ gi) {
  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int64_t k = idx[i];
    scalar_t g = scalar_t(0);
    if (k >= 0 && k < out_plane) {
      if constexpr (kCL) {  // i = (n * H*W + hw) * C + c; div_plane divides by H*W*C
        const unsigned int n = div_plane.div(i), c = div_c.mod(i);
        g = go[(n * out_plane + k) * div_c.divisor + c];
      } else {  // i = p * H*W + hw
        g = go[div_plane.div(i) * out_plane + k];
      }
    }
    gi[i] = g;
  }
}

// unpool_backward_dense_kernel's channels_last case for an even C, two neighbouring channels per
// thread: both indices in one 16-byte load, both gradients in one Pair store; the two gathers
// are independent.
template <typename scalar_t>
__global__ void unpool_backward_dense_cl_pairs_kernel(unsigned int pairs, Div32 div_plane, Div32 div_c,
                                                      int64_t out_plane, const scalar_t* __restrict__ go,
                                                      const int64_t* __restrict__ idx, scalar_t* __restrict__ gi) {
  const unsigned int C = div_c.divisor;
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += gridDim.x * blockDim.x) {
    const unsigned int i = 2 * j;  // i = (n * H*W + hw) * C + c, c even; div_plane divides by H*W*C
    const longlong2 k = *reinterpret_cast<const longlong2*>(idx + i);
    const int64_t base = int64_t{div_plane.div(i)} * out_plane;
    const unsigned int c = div_c.mod(i);
    scalar_t g0 = scalar_t(0), g1 = scalar_t(0);
    if (k.x >= 0 && k.x < out_plane) g0 = go[(base + k.x) * C + c];
    if (k.y >= 0 && k.y < out_plane) g1 = go[(base + k.y) * C + c + 1];
    *reinterpret_cast<Pair<scalar_t>*>(gi + i) = {g0, g1};
  }
}

// unpool_backward_dense_kernel's NCHW case, two elements per thread (an even count): both indices
// in one 16-byte load, both gradients in one store; the two gathers are independent, so each
// thread keeps twice the reads in flight.
template <typename scalar_t>
__global__ void unpool_backward_dense_pairs_kernel(unsigned int pairs, Div32 div_plane, int64_t out_plane,
                                                   const scalar_t* __restrict__ go, const int64_t* __restrict__ idx,
                                                   scalar_t* __restrict__ gi) {
  for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += gridDim.x * blockDim.x) {
    const unsigned int i = 2 * j;
    const longlong2 k = *reinterpret_cast<const longlong2*>(idx + i);
    scalar_t g0 = scalar_t(0), g1 = scalar_t(0);
    if (k.x >= 0 && k.x < out_plane) g0 = go[div_plane.div(i) * out_plane + k.x];
    if (k.y >= 0 && k.y < out_plane) g1 = go[div_plane.div(i + 1) * out_plane + k.y];
    *reinterpret_cast<Pair<scalar_t>*>(gi + i) = {g0, g1};
  }
}

// The gather's fix-up (unpool_outside_window_target) when nothing is read back to the host: one
// warp per (n, c) plane walks its inputs kFixUnroll x 32 at a time in order (their index loads
// all in flight at once); the lanes that must write do so one after another in lane order, so the
// last write to an output element is from its highest input position, as in the scatter. Only
// runs of hand-built indices get past the flag test, and then every plane is walked: about one
// DRAM latency per 256 inputs per plane, slower than the scatter when planes are few (the checked
// call, which reads the flag anyway, takes the scatter instead).
constexpr int kFixUnroll = 8;

template <typename scalar_t>
__global__ void unpool_outside_window_kernel(UnpoolGeometry g, const scalar_t* __restrict__ in, Strides4 xs,
                                             const int64_t* __restrict__ idx, Strides4 is, scalar_t* out,
                                             Strides4 os, const int* __restrict__ flags) {
  if (!(*flags & kUnpoolIndexOutsideWindow)) return;  // the common case: every index in its window
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  const auto plane_size = static_cast<unsigned int>(g.H * g.W), W = static_cast<unsigned int>(g.W);  // < 2^31
  for (int64_t p = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; p < g.N * g.C; p += warps) {
    const int64_t n = p / g.C, c = p % g.C;
    for (unsigned int base = 0; base < plane_size; base += 32 * kFixUnroll) {
      bool write[kFixUnroll];
      int64_t th[kFixUnroll] = {}, tw[kFixUnroll] = {};
#pragma unroll
      for (int u = 0; u < kFixUnroll; ++u) {
        const unsigned int i = base + u * 32 + lane;
        write[u] = i < plane_size && unpool_outside_window_target(g, idx, is, n, c, i / W, i % W, th[u], tw[u]);
      }
#pragma unroll
      for (int u = 0; u < kFixUnroll; ++u) {
        const unsigned int i = base + u * 32 + lane;
        for (unsigned int mask = __ballot_sync(0xffffffffu, write[u]); mask != 0; mask &= mask - 1) {
          if (lane == __ffs(mask) - 1) out[os.at(n, c, th[u], tw[u])] = in[xs.at(n, c, i / W, i % W)];
          __syncwarp();  // orders this lane's store before the next lane's (they may share an address)
        }
      }
    }
  }
}

// Pass 1 of the scatter: winner[n, c, k] = max flat input position h * W + w targeting k.
__global__ void unpool_pick_winner_kernel(UnpoolGeometry g, const int64_t* __restrict__ idx, Strides4 is,
                                          int* __restrict__ winner, int* __restrict__ flags) {
  const int64_t total = g.N * g.C * g.H * g.W;
  const int64_t plane = g.OH * g.OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    decompose(i, false, g.C, g.H, g.W, n, c, h, w);
    const int64_t k = idx[is.at(n, c, h, w)];
    if (k < 0 || k >= plane) {
      atomicOr(flags, kUnpoolIndexOutOfRange);
      continue;
    }
    atomicMax(winner + (n * g.C + c) * plane + k, static_cast<int>(h * g.W + w));
  }
}

// Pass 2: every output element written once, from its winner or zero.
template <typename scalar_t>
__global__ void unpool_write_winner_kernel(UnpoolGeometry g, bool channels_last, const scalar_t* __restrict__ in,
                                           Strides4 xs, const int* __restrict__ winner,
                                           scalar_t* __restrict__ out, Strides4 os) {
  const int64_t total = g.N * g.C * g.OH * g.OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, oh, ow;
    decompose(i, channels_last, g.C, g.OH, g.OW, n, c, oh, ow);
    const int src = winner[((n * g.C + c) * g.OH + oh) * g.OW + ow];
    out[os.at(n, c, oh, ow)] = src >= 0 ? in[xs.at(n, c, src / g.W, src % g.W)] : scalar_t(0);
  }
}

template <typename scalar_t>
__global__ void unpool_backward_kernel(UnpoolGeometry g, bool channels_last, const scalar_t* __restrict__ go,
                                       Strides4 gs, const int64_t* __restrict__ idx, Strides4 is,
                                       scalar_t* __restrict__ gi, Strides4 os) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = g.N * g.C * g.H * g.W;
  const int64_t plane = g.OH * g.OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    decompose(i, channels_last, g.C, g.H, g.W, n, c, h, w);
    acc_t acc = 0;
    if (g.mode == UnpoolMode::kIndices) {
      const int64_t k = idx[is.at(n, c, h, w)];
      if (k >= 0 && k < plane) acc = go[gs.at(n, c, k / g.OW, k % g.OW)];
    } else {
      const bool all = g.mode == UnpoolMode::kNearest;
      const int64_t oh0 = h * g.sh, ow0 = w * g.sw;
      const int64_t oh1 = min(oh0 + (all ? g.sh : 1), g.OH), ow1 = min(ow0 + (all ? g.sw : 1), g.OW);
      for (int64_t oh = oh0; oh < oh1; ++oh)
        for (int64_t ow = ow0; ow < ow1; ++ow) acc += static_cast<acc_t>(go[gs.at(n, c, oh, ow)]);
    }
    gi[os.at(n, c, h, w)] = static_cast<scalar_t>(acc);
  }
}

}  // namespace

at::Tensor max_unpool_forward_cuda(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                   int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_size, bool check_indices) {
  const UnpoolGeometry g = check_unpool_args("max_unpool_forward", input.sizes(), input.device(),
                                             input.scalar_type(), indices, mode, kernel, stride, padding,
                                             output_size);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const at::MemoryFormat fmt = unpool_output_format(input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  at::Tensor output = at::empty({g.N, g.C, g.OH, g.OW}, input.options().memory_format(fmt));
  if (output.numel() == 0) return output;
  TORCH_CHECK(g.H * g.W < (int64_t(1) << 31), "max_unpool_forward: input planes above 2^31 elements");
  const bool use_indices = g.mode == UnpoolMode::kIndices;
  const int64_t* idx = use_indices ? indices->const_data_ptr<int64_t>() : nullptr;
  const Strides4 is = strides_of(use_indices ? *indices : input);
  const Strides4 xs = strides_of(input), os = strides_of(output);
  // Under CUDA-graph capture the host cannot read the flags: out-of-range indices are dropped.
  const bool read_flags = use_indices && check_indices &&
                          at::cuda::currentStreamCaptureStatusMayInitCtx() == at::cuda::CaptureStatus::None;
  // Only max-unpool raises flags (the other modes have no index to get wrong).
  at::Tensor flags = use_indices ? at::zeros({1}, input.options().dtype(at::kInt)) : at::Tensor();
  int* flags_ptr = use_indices ? flags.data_ptr<int>() : nullptr;
  auto stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool_forward_cuda", [&] {
    auto scatter = [&] {
      at::Tensor winner = at::full({g.N, g.C, g.OH, g.OW}, -1, input.options().dtype(at::kInt));
      if (input.numel() > 0) {  // an empty input with a non-empty output would launch 0 blocks (an error)
        unpool_pick_winner_kernel<<<blocks_for(input.numel()), kThreads, 0, stream>>>(
            g, idx, is, winner.data_ptr<int>(), flags_ptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      unpool_write_winner_kernel<scalar_t><<<blocks_for(output.numel()), kThreads, 0, stream>>>(
          g, cl, input.const_data_ptr<scalar_t>(), xs, winner.const_data_ptr<int>(), output.data_ptr<scalar_t>(), os);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    // (the gather reads only inputs inside the window grid: grid_covers_input; the CPU kernel
    // makes the same choice)
    if (!g.windows_tile() || (use_indices && !g.grid_covers_input())) {
      TORCH_CHECK(use_indices, "max_unpool_forward: this mode needs kernel == stride");
      scatter();
      if (read_flags && (flags.item<int>() & kUnpoolIndexOutOfRange)) raise_out_of_range(g);
      return;
    }
    const bool dense = input.is_contiguous(fmt) && (!use_indices || indices->is_contiguous(fmt));
    if (dense && g.kh == 2 && g.kw == 2 && g.OH == 2 * g.H && g.OW == 2 * g.W && output.numel() < (int64_t{1} << 31)) {
      const auto total = static_cast<unsigned int>(input.numel());
      const Div32 div_c(static_cast<unsigned int>(cl ? g.C : 1)), div_w(static_cast<unsigned int>(g.W)),
          div_h(static_cast<unsigned int>(g.H));
      const scalar_t* in = input.const_data_ptr<scalar_t>();
      // two windows (NCHW, sharing a row) or two channels of one window (channels_last) a thread,
      // where their loads and stores are aligned
      const bool pairs_aligned = aligned(in, 2 * sizeof(scalar_t)) && (idx == nullptr || aligned(idx, 16));
      if (!cl && g.W % 2 == 0 && pairs_aligned) {
        unpool_gather2x2_pairs_kernel<scalar_t><<<blocks_for(total / 2), kThreads, 0, stream>>>(
            g.mode, total / 2, div_w, div_h, in, idx, output.data_ptr<scalar_t>(), flags_ptr);
      } else if (cl && g.C % 2 == 0 && pairs_aligned) {
        unpool_gather2x2_cl_pairs_kernel<scalar_t><<<blocks_for(total / 2), kThreads, 0, stream>>>(
            g.mode, total / 2, div_c, div_w, div_h, in, idx, output.data_ptr<scalar_t>(), flags_ptr);
      } else {
        auto kernel = cl ? unpool_gather2x2_kernel<scalar_t, true> : unpool_gather2x2_kernel<scalar_t, false>;
        kernel<<<blocks_for(input.numel()), kThreads, 0, stream>>>(g.mode, total, div_c, div_w, div_h, in, idx,
                                                                    output.data_ptr<scalar_t>(), flags_ptr);
      }
    } else {
      const int64_t windows = g.N * g.C * ((g.OH + g.sh - 1) / g.sh) * ((g.OW + g.sw - 1) / g.sw);
      unpool_gather_kernel<scalar_t><<<blocks_for(windows), kThreads, 0, stream>>>(
          g, cl, input.const_data_ptr<scalar_t>(), xs, idx, is, output.data_ptr<scalar_t>(), os, flags_ptr);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!use_indices || input.numel() == 0) return;
    if (read_flags) {  // the host reads the flags anyway: a rare index outside its window takes the scatter
      const int f = flags.item<int>();
      if (f & kUnpoolIndexOutOfRange) raise_out_of_range(g);
      if (f & kUnpoolIndexOutsideWindow) scatter();
      return;
    }
    // asynchronous: the fix-up decides on the device (a warp a plane, at most 1024 blocks; when
    // every index is in its window each block only reads the flag)
    const int64_t planes = g.N * g.C, warps_per_block = kThreads / 32;
    const auto blocks =
        static_cast<unsigned int>(std::min<int64_t>((planes + warps_per_block - 1) / warps_per_block, 1024));
    unpool_outside_window_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        g, input.const_data_ptr<scalar_t>(), xs, idx, is, output.data_ptr<scalar_t>(), os, flags_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor max_unpool_backward_cuda(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                    int64_t mode, at::IntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding) {
  TORCH_CHECK(grad_output.dim() == 4, "max_unpool_backward: grad_output must be 4-D");
  const UnpoolGeometry g = check_unpool_args("max_unpool_backward", input_size, grad_output.device(),
                                             grad_output.scalar_type(), indices, mode, kernel, stride, padding,
                                             {grad_output.size(2), grad_output.size(3)});
  TORCH_CHECK(grad_output.size(0) == g.N && grad_output.size(1) == g.C,
              "max_unpool_backward: grad_output batch/channels do not match input_size");
  const at::cuda::OptionalCUDAGuard guard(device_of(grad_output));
  const at::MemoryFormat fmt = unpool_output_format(grad_output);
  at::Tensor grad_input = at::empty({g.N, g.C, g.H, g.W}, grad_output.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const bool use_indices = g.mode == UnpoolMode::kIndices;
  const int64_t* idx = use_indices ? indices->const_data_ptr<int64_t>() : nullptr;
  const Strides4 is = strides_of(use_indices ? *indices : grad_input);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const bool dense = use_indices && grad_output.is_contiguous(fmt) && indices->is_contiguous(fmt) &&
                     grad_output.numel() < (int64_t{1} << 31) && grad_input.numel() < (int64_t{1} << 31);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "max_unpool_backward_cuda", [&] {
    if (dense) {
      const Div32 div_plane(static_cast<unsigned int>(g.H * g.W * (cl ? g.C : 1))),
          div_c(static_cast<unsigned int>(cl ? g.C : 1));
      const auto total = static_cast<unsigned int>(grad_input.numel());
      if (!cl && total % 2 == 0 && aligned(idx, 16)) {  // two elements a thread (grad_input is fresh: aligned)
        unpool_backward_dense_pairs_kernel<scalar_t><<<blocks_for(total / 2), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            total / 2, div_plane, g.OH * g.OW, grad_output.const_data_ptr<scalar_t>(), idx,
            grad_input.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      if (cl && g.C % 2 == 0 && aligned(idx, 16)) {  // two channels a thread
        unpool_backward_dense_cl_pairs_kernel<scalar_t><<<blocks_for(total / 2), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            total / 2, div_plane, div_c, g.OH * g.OW, grad_output.const_data_ptr<scalar_t>(), idx,
            grad_input.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      auto kernel = cl ? unpool_backward_dense_kernel<scalar_t, true> : unpool_backward_dense_kernel<scalar_t, false>;
      kernel<<<blocks_for(grad_input.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          static_cast<unsigned int>(grad_input.numel()), div_plane, div_c, g.OH * g.OW,
          grad_output.const_data_ptr<scalar_t>(), idx, grad_input.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    unpool_backward_kernel<scalar_t><<<blocks_for(grad_input.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        g, fmt == at::MemoryFormat::ChannelsLast, grad_output.const_data_ptr<scalar_t>(), strides_of(grad_output),
        idx, is, grad_input.data_ptr<scalar_t>(), strides_of(grad_input));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace rnnkern
