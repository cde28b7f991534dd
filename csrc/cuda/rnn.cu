// Fused vanilla RNN (Elman) on CUDA: two paths, chosen in one place (choose_rnn_path).
//
// * Persistent (fp32/fp16/bf16, W_hh fits on chip, B <= 64, lengths or not): ONE
//   cooperative launch runs every time step. Each CTA keeps a slice of `rows` rows of W_hh
//   (W_hh^T in backward) in shared memory for the whole sequence; per step it reads the previous
//   state from L2 (ld.global.cg: L1 is not coherent across SMs), computes its rows for the whole
//   batch with fp32 accumulation, applies bias/activation in the epilogue, writes them, and the
//   CTAs synchronise once (the step barrier, below). The input projection (forward) and the
//   weight/input gradients (backward) stay as large cuBLAS GEMMs around it. Each output is
//   reduced by one warp in a fixed order: bitwise deterministic. A warp takes 1-8 sequences at
//   a time so that at large B one shared-memory weight load feeds several FMAs. Variable
//   lengths: rows of finished sequences (b >= live[t], a prefix rule since lengths are sorted)
//   are zeroed; their dz rows then contribute nothing to the next step, so no other special
//   case is needed.
// * General (any shape/dtype): csrc/rnn_driver.h — one cuBLAS GEMM + one activation
//   per step on the current stream.
//
// Step barriers (measured on an H200 for 132 CTAs: grid.sync 0.98 us, flag barrier 0.92 us): a
// whole-grid barrier floors a step near 1 us, so when W_hh's rows fit one thread-block cluster
// (<= 16 CTAs on sm_90, i.e. H <= 256 at 16 rows per CTA) the launch is one cluster and steps
// end with the cluster's hardware barrier; otherwise cooperative groups' grid.sync, or a flag
// barrier (one arrival counter, monotonically increasing, so it never needs resetting).
//
// Set RNNKERN_RNN_PATH=general|persistent to force a path (persistent falls back when it does
// not fit), RNNKERN_RNN_BARRIER=grid|flag|cluster to force a barrier where it can run,
// RNNKERN_DEBUG=1 to log the choice.
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../ops.h"
#include "../rnn_driver.h"

namespace rnnkern {
namespace {

namespace cg = cooperative_groups;

constexpr int kPersistThreads = 256;
constexpr int kMaxRows = 16;    // rows of W per CTA held in registers as accumulators
constexpr int64_t kMaxBatch = 64;  // above this the L2 traffic of re-reading h per CTA loses to GEMMs
constexpr int kMaxClusterCtas = 16;  // Hopper's largest (non-portable) thread-block cluster

template <typename T>
__device__ __forceinline__ T load_cg(const T* p) { return __ldcg(p); }
template <>
__device__ __forceinline__ c10::Half load_cg(const c10::Half* p) {
  return c10::Half(__ldcg(reinterpret_cast<const unsigned short*>(p)), c10::Half::from_bits());
}
template <>
__device__ __forceinline__ c10::BFloat16 load_cg(const c10::BFloat16* p) {
  return c10::BFloat16(__ldcg(reinterpret_cast<const unsigned short*>(p)), c10::BFloat16::from_bits());
}

// How the CTAs of one persistent launch wait for each other at the end of every step. Each must
// also make the step's global writes visible to the other CTAs (their reads go to L2: ld.global.cg).
enum class StepBarrier { kGrid, kFlag, kCluster };

__device__ __forceinline__ unsigned int load_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// `arrivals` counts CTA arrivals over the whole launch: step s is complete everywhere once it
// reaches (s + 1) * gridDim.x, so the counter never needs resetting inside the kernel.
template <StepBarrier kBarrier>
__device__ __forceinline__ void step_barrier(unsigned int* arrivals, unsigned int target) {
  if constexpr (kBarrier == StepBarrier::kGrid) {
    cg::this_grid().sync();
  } else if constexpr (kBarrier == StepBarrier::kCluster) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::this_cluster().sync();  // barrier.cluster.arrive.release + wait.acquire
#else
    __trap();  // the host launches cluster kernels only from sm_90 code (see launch_persistent)
#endif
  } else {
    __syncthreads();  // every thread of this CTA has written its part of the step
    if (threadIdx.x == 0) {
      __threadfence();  // ... and those writes are visible device-wide before we arrive
      atomicAdd(arrivals, 1u);
      while (load_acquire_gpu(arrivals) < target) {
      }
    }
    __syncthreads();
  }
}

template <typename scalar_t>
struct PersistentParams {
  const scalar_t* weight;   // (H, H) row-major: row r produces unit r (W_hh fwd, W_hh^T bwd)
  scalar_t* seq;            // (T, B, H): pre-activations / upstream grads in, results out, in place
  const scalar_t* state0;   // (B, H) state before the first step; nullptr = zeros
  const scalar_t* act_out;  // backward: forward outputs h_t for act'(.); forward: nullptr
  const int* live;          // (T) sequences still running at step t (a prefix: lengths are sorted); nullptr = B
  unsigned int* arrivals;   // flag barrier's counter, zeroed before the launch; unused otherwise
  int T, B, H, rows;
  bool relu, backward;
};

// Rows of W per lane held as accumulators for a batch tile of kBatchTile sequences: at most 64
// fp32 accumulators per thread (16 rows x 4, 8 rows x 8), no spills under __launch_bounds__(256).
template <int kBatchTile>
constexpr int rows_for_tile() {
  return 64 / kBatchTile < kMaxRows ? 64 / kBatchTile : kMaxRows;
}

// forward : seq[t] = act(seq[t] + h_{t-1} W^T),                 t = 0 .. T-1, h_{-1} = state0
// backward: seq[t] = (seq[t] + dz_{t+1} W) * act'(h_t)           t = T-1 .. 0, dz_T = 0
//
// Each warp takes kBatchTile sequences at a time: a weight read from shared memory feeds
// kBatchTile FMAs (at B=64 one per sequence would make shared-memory loads the bound), while
// small batches keep kBatchTile = 1 so every warp has a sequence. Each output is one lane-strided
// sum over k followed by a fixed xor-shuffle tree, whatever kBatchTile, grid size or barrier:
// results are bitwise the same across them.
template <typename scalar_t, StepBarrier kBarrier, int kBatchTile>
__global__ void __launch_bounds__(kPersistThreads) rnn_persistent_kernel(PersistentParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kRows = rows_for_tile<kBatchTile>();
  extern __shared__ unsigned char smem_raw[];
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem_raw);
  const int r0 = blockIdx.x * p.rows;
  const int rows = min(p.rows, p.H - r0);  // <= kRows (choose_rnn_path)
  for (int i = threadIdx.x; i < rows * p.H; i += blockDim.x) w_s[i] = p.weight[static_cast<int64_t>(r0) * p.H + i];
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  const int64_t step = static_cast<int64_t>(p.B) * p.H;
  for (int s = 0; s < p.T; ++s) {
    const int t = p.backward ? p.T - 1 - s : s;
    const scalar_t* prev = s == 0 ? p.state0 : p.seq + (p.backward ? t + 1 : t - 1) * step;
    scalar_t* cur = p.seq + t * step;
    const int live = p.live ? p.live[t] : p.B;  // sequences b < live still run at step t
    for (int b0 = warp * kBatchTile; b0 < p.B; b0 += nwarps * kBatchTile) {
      acc_t acc[kRows][kBatchTile];
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int j = 0; j < kBatchTile; ++j) acc[r][j] = acc_t(0);
      if (prev != nullptr && b0 < live) {
        for (int c = lane; c < p.H; c += 32) {
          acc_t x[kBatchTile];
#pragma unroll
          for (int j = 0; j < kBatchTile; ++j)
            x[j] = b0 + j < live ? static_cast<acc_t>(load_cg(prev + static_cast<int64_t>(b0 + j) * p.H + c)) : acc_t(0);
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            if (r < rows) {
              const acc_t w = static_cast<acc_t>(w_s[r * p.H + c]);
#pragma unroll
              for (int j = 0; j < kBatchTile; ++j) acc[r][j] += w * x[j];
            }
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int j = 0; j < kBatchTile; ++j) {
          if (r >= rows || b0 + j >= p.B) continue;  // uniform across the warp: the shuffles stay converged
          acc_t sum = acc[r][j];
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
          if (lane == (r * kBatchTile + j) % 32) {
            const int b = b0 + j;
            const int64_t i = static_cast<int64_t>(b) * p.H + r0 + r;
            acc_t y = acc_t(0);  // finished sequence: output / gradient is zero from here on
            if (b < live) {
              const acc_t z = static_cast<acc_t>(load_cg(cur + i)) + sum;
              if (!p.backward) {
                y = p.relu ? (z > acc_t(0) ? z : acc_t(0)) : tanh(z);
              } else {
                const acc_t h = static_cast<acc_t>(p.act_out[t * step + i]);
                y = p.relu ? (h > acc_t(0) ? z : acc_t(0)) : z * (acc_t(1) - h * h);
              }
            }
            cur[i] = static_cast<scalar_t>(y);
          }
        }
      }
    }
    // step t complete everywhere (writes visible) before step t +- 1 reads it
    step_barrier<kBarrier>(p.arrivals, static_cast<unsigned int>(s + 1) * gridDim.x);
  }
}

struct PersistentConfig {
  bool use = false;
  int grid = 0, rows = 0;
  size_t smem = 0;
  StepBarrier barrier = StepBarrier::kGrid;
  int batch_tile = 1;  // sequences per warp at a time (rnn_persistent_kernel's kBatchTile)
  const char* why = "";
};

const char* barrier_name(StepBarrier b) {
  return b == StepBarrier::kCluster ? "cluster" : b == StepBarrier::kFlag ? "flag" : "grid";
}

// One cluster when the device has clusters and W_hh's rows fit one (kMaxRows rows on each of at
// most kMaxClusterCtas CTAs); otherwise grid.sync. RNNKERN_RNN_BARRIER=grid|flag forces a
// whole-grid barrier (to measure the two against each other and against the cluster).
StepBarrier choose_barrier(int64_t H, const cudaDeviceProp& prop) {
  const char* forced = std::getenv("RNNKERN_RNN_BARRIER");
  if (forced != nullptr && std::strcmp(forced, "grid") == 0) return StepBarrier::kGrid;
  if (forced != nullptr && std::strcmp(forced, "flag") == 0) return StepBarrier::kFlag;
  const bool cluster_fits = prop.major >= 9 && H <= int64_t{kMaxClusterCtas} * kMaxRows;
  return cluster_fits ? StepBarrier::kCluster : StepBarrier::kGrid;
}

// The one place that decides between the persistent kernel and the general path, from the
// problem size and the device's SM count, shared memory and co-residency limits.
PersistentConfig choose_rnn_path(const at::Tensor& x, int64_t B, int64_t H) {
  PersistentConfig cfg;
  const char* forced = std::getenv("RNNKERN_RNN_PATH");
  const auto dtype = x.scalar_type();
  if (forced != nullptr && std::strcmp(forced, "general") == 0) {
    cfg.why = "RNNKERN_RNN_PATH=general";
  } else if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    cfg.why = "dtype";
  } else if (B < 1 || B > kMaxBatch) {
    cfg.why = "batch outside [1, 64]";
  } else if (H < 1) {
    cfg.why = "H = 0";  // rows would be 0 below (a division by zero on the host)
  } else {
    const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
    const StepBarrier barrier = choose_barrier(H, *prop);
    // rows spread over every SM for a grid barrier, over at most one cluster otherwise
    const int ctas = barrier == StepBarrier::kCluster ? kMaxClusterCtas : prop->multiProcessorCount;
    const int rows = static_cast<int>((H + ctas - 1) / ctas);
    const int grid = static_cast<int>((H + rows - 1) / rows);
    const size_t smem = static_cast<size_t>(rows) * H * x.element_size();
    if (!prop->cooperativeLaunch && barrier != StepBarrier::kCluster) {
      cfg.why = "no cooperative launch";
    } else if (rows > kMaxRows) {
      cfg.why = "H too large for the grid";
    } else if (smem > prop->sharedMemPerBlockOptin) {
      cfg.why = "W_hh slice exceeds shared memory";
    } else {
      // the widest batch tile that still gives each of the 8 warps a tile and keeps rows x tile
      // accumulators within rows_for_tile's budget
      const int64_t warps = kPersistThreads / 32;
      int tile = 8;
      while (tile > 1 && ((B + warps - 1) / warps < tile || rows * tile > 64)) tile /= 2;
      cfg = {true, grid, rows, smem, barrier, tile, "fits"};
    }
  }
  if (rnn_debug_log_enabled())
    std::fprintf(stderr, "rnnkern: rnn B=%lld H=%lld %s -> %s path (%s%s%s, batch tile %d)\n",
                 static_cast<long long>(B), static_cast<long long>(H), c10::toString(dtype),
                 cfg.use ? "persistent" : "general", cfg.why, cfg.use ? ", barrier " : "",
                 cfg.use ? barrier_name(cfg.barrier) : "", cfg.batch_tile);
  return cfg;
}

// The dynamic shared-memory cap, not this call's size: one value for every call, so a launch on
// another host thread (autograd's device thread runs the backward) cannot lower it between our
// set and our launch. The kernel has no static shared memory, so the whole opt-in limit is available.
template <typename Kernel>
void allow_full_shared_memory(Kernel kernel) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin)));
}

// Logged so tests can tell a silent fallback from a persistent run.
bool fall_back(const char* why, int grid) {
  if (rnn_debug_log_enabled())
    std::fprintf(stderr, "rnnkern: rnn persistent grid of %d CTAs %s -> general path\n", grid, why);
  return false;
}

// Cooperative launch (grid.sync and the flag barrier both need every CTA co-resident); returns
// false (nothing launched) if the grid cannot be, so the caller falls back to the general path.
template <typename scalar_t, StepBarrier kBarrier, int kBatchTile>
bool launch_cooperative(const PersistentConfig& cfg, PersistentParams<scalar_t> params) {
  auto kernel = rnn_persistent_kernel<scalar_t, kBarrier, kBatchTile>;
  allow_full_shared_memory(kernel);
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistThreads, cfg.smem));
  if (per_sm * at::cuda::getCurrentDeviceProperties()->multiProcessorCount < cfg.grid)
    return fall_back("not co-resident", cfg.grid);
  at::Tensor arrivals;
  if constexpr (kBarrier == StepBarrier::kFlag) {
    if (int64_t{params.T} * cfg.grid >= (int64_t{1} << 32))  // the arrival count would wrap
      return launch_cooperative<scalar_t, StepBarrier::kGrid, kBatchTile>(cfg, params);
    arrivals = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, at::cuda::current_device()));
    params.arrivals = reinterpret_cast<unsigned int*>(arrivals.data_ptr<int>());
  }
  void* args[] = {&params};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), cfg.grid, kPersistThreads, args,
                                             cfg.smem, at::cuda::getCurrentCUDAStream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;  // `arrivals` is freed stream-ordered: no later work on this stream reuses it early
}

// One thread-block cluster of cfg.grid CTAs; false when this build has no sm_90 code for the
// kernel or the cluster cannot be resident.
template <typename scalar_t, int kBatchTile>
bool launch_cluster(const PersistentConfig& cfg, const PersistentParams<scalar_t>& params) {
  auto kernel = rnn_persistent_kernel<scalar_t, StepBarrier::kCluster, kBatchTile>;
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  if (attr.ptxVersion < 90) return fall_back("has no sm_90 code in this build for a cluster", cfg.grid);
  allow_full_shared_memory(kernel);
  if (cfg.grid > 8) C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchAttribute cluster_dim;
  cluster_dim.id = cudaLaunchAttributeClusterDimension;
  cluster_dim.val.clusterDim.x = cfg.grid;
  cluster_dim.val.clusterDim.y = 1;
  cluster_dim.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(cfg.grid);
  config.blockDim = dim3(kPersistThreads);
  config.dynamicSmemBytes = cfg.smem;
  config.stream = at::cuda::getCurrentCUDAStream();
  config.attrs = &cluster_dim;
  config.numAttrs = 1;
  int clusters = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  if (clusters < 1) return fall_back("cannot be one resident cluster", cfg.grid);
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename scalar_t, int kBatchTile>
bool launch_with_tile(const PersistentConfig& cfg, const PersistentParams<scalar_t>& params) {
  switch (cfg.barrier) {
    case StepBarrier::kCluster:
      return launch_cluster<scalar_t, kBatchTile>(cfg, params);
    case StepBarrier::kFlag:
      return launch_cooperative<scalar_t, StepBarrier::kFlag, kBatchTile>(cfg, params);
    default:
      return launch_cooperative<scalar_t, StepBarrier::kGrid, kBatchTile>(cfg, params);
  }
}

template <typename scalar_t>
bool launch_persistent(const PersistentConfig& cfg, const PersistentParams<scalar_t>& params) {
  switch (cfg.batch_tile) {
    case 8:
      return launch_with_tile<scalar_t, 8>(cfg, params);
    case 4:
      return launch_with_tile<scalar_t, 4>(cfg, params);
    case 2:
      return launch_with_tile<scalar_t, 2>(cfg, params);
    default:
      return launch_with_tile<scalar_t, 1>(cfg, params);
  }
}

// The persistent kernels' dtypes (fp64 stays on the general path: choose_rnn_path).
template <typename Fn>
void dispatch_persistent_dtype(at::ScalarType dtype, Fn&& fn) {
  switch (dtype) {
    case at::kFloat:
      return fn(float{});
    case at::kHalf:
      return fn(c10::Half{});
    case at::kBFloat16:
      return fn(c10::BFloat16{});
    default:
      TORCH_CHECK(false, "rnn persistent kernel: unsupported dtype ", dtype);
  }
}

template <typename scalar_t>
PersistentParams<scalar_t> make_params(const at::Tensor& weight, at::Tensor& seq, const at::Tensor* state0,
                                       const at::Tensor* act_out, const at::Tensor& live,
                                       const PersistentConfig& cfg, bool relu, bool backward) {
  PersistentParams<scalar_t> p;
  p.weight = weight.const_data_ptr<scalar_t>();
  p.seq = seq.data_ptr<scalar_t>();
  p.state0 = state0 ? state0->const_data_ptr<scalar_t>() : nullptr;
  p.act_out = act_out ? act_out->const_data_ptr<scalar_t>() : nullptr;
  p.live = live.defined() ? live.const_data_ptr<int>() : nullptr;
  p.arrivals = nullptr;
  p.T = static_cast<int>(seq.size(0));
  p.B = static_cast<int>(seq.size(1));
  p.H = static_cast<int>(seq.size(2));
  p.rows = cfg.rows;
  p.relu = relu;
  p.backward = backward;
  return p;
}

// bs[t] on the device, or undefined when every sequence runs all T steps.
at::Tensor live_rows(const std::vector<int64_t>& bs, int64_t B, const at::Tensor& like) {
  if (std::all_of(bs.begin(), bs.end(), [B](int64_t n) { return n == B; })) return at::Tensor();
  std::vector<int> live(bs.begin(), bs.end());
  return at::tensor(live, at::TensorOptions().dtype(at::kInt)).to(like.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rnn_forward_cuda(const at::Tensor& input, const at::Tensor& hx,
                                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                    const std::optional<at::Tensor>& b_ih,
                                                    const std::optional<at::Tensor>& b_hh,
                                                    const std::optional<at::Tensor>& lengths, bool relu) {
  const RnnShapes s = check_rnn_args("rnn_forward", input, hx, w_ih, w_hh, b_ih, b_hh);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const std::vector<int64_t> bs = batch_sizes("rnn_forward", s, lengths);
  if (s.T > 0 && s.T < (int64_t(1) << 31)) {
    const PersistentConfig cfg = choose_rnn_path(input, s.B, s.H);
    if (cfg.use) {
      at::Tensor out = at::empty({s.T, s.B, s.H}, input.options());
      at::Tensor out2 = out.view({s.T * s.B, s.H});
      rnn_input_projection(out2, input, w_ih, b_ih, b_hh);
      const at::Tensor w = w_hh.contiguous(), h0 = hx.contiguous(), live = live_rows(bs, s.B, input);
      bool launched = false;
      dispatch_persistent_dtype(input.scalar_type(), [&](auto zero) {
        using scalar_t = decltype(zero);
        launched = launch_persistent<scalar_t>(cfg, make_params<scalar_t>(w, out, &h0, nullptr, live, cfg, relu, false));
      });
      if (launched) return {out, rnn_last_state(out, h0, lengths)};
    }
  }
  return rnn_forward_general(input, hx, w_ih, w_hh, b_ih, b_hh, bs, lengths, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  const RnnShapes s = check_rnn_backward_args(grad_output, grad_hn, input, hx, w_ih, w_hh, output);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const std::vector<int64_t> bs = batch_sizes("rnn_backward", s, lengths);
  if (s.T > 0 && s.T < (int64_t(1) << 31)) {
    const PersistentConfig cfg = choose_rnn_path(input, s.B, s.H);
    if (cfg.use) {
      // dz starts as the upstream gradient of each step's output; dL/dh_n enters at each
      // sequence's last step. Lengths are sorted, so equal lengths form runs of rows: one add per
      // run (no index_add_, which is atomic on CUDA and refused in deterministic mode).
      at::Tensor dz = grad_output.clone(at::MemoryFormat::Contiguous);
      for (int64_t b0 = 0, b1; b0 < s.B; b0 = b1) {
        const int64_t len = lengths.has_value() ? lengths->select(0, b0).item<int64_t>() : s.T;
        for (b1 = b0 + 1; b1 < s.B && (lengths.has_value() ? lengths->select(0, b1).item<int64_t>() : s.T) == len;) ++b1;
        if (len > 0) dz.select(0, len - 1).narrow(0, b0, b1 - b0).add_(grad_hn.narrow(0, b0, b1 - b0));
      }
      const at::Tensor w_t = w_hh.t().contiguous(), out = output.contiguous(), live = live_rows(bs, s.B, input);
      bool launched = false;
      dispatch_persistent_dtype(input.scalar_type(), [&](auto zero) {
        using scalar_t = decltype(zero);
        launched = launch_persistent<scalar_t>(cfg, make_params<scalar_t>(w_t, dz, nullptr, &out, live, cfg, relu, true));
      });
      // dz now holds dL/d(pre-activation) for every step; the rest is large GEMMs
      if (launched) return rnn_grads_from_dz(dz, grad_hn, input, hx, w_ih, w_hh, out, bs, has_bias);
    }
  }
  return rnn_backward_general(grad_output, grad_hn, input, hx, w_ih, w_hh, output, bs, relu, has_bias);
}

}  // namespace rnnkern
