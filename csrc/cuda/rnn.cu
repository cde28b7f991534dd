// Fused vanilla RNN (Elman) on CUDA: two persistent kernels and the general path, chosen in one
// place (choose_rnn_path).
//
// * Persistent FMA kernel (fp32/fp16/bf16, W_hh fits on chip, B <= 64, lengths or not): ONE
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
// * Persistent on tensor cores (bf16/fp16, and fp32 as tf32 when torch.backends.cudnn.allow_tf32,
//   the flag that governs the cuDNN RNN this replaces; sm_90, B >= 16, or B >= 8 at H >= 512, by
//   default): at large B the kernel above is bound by every CTA re-reading all of h_{t-1} from L2 and by FMA issue. Here
//   W_hh is split along k as well: a cluster of 8 CTAs owns `units` rows, CTA j of it holds those
//   rows x the j-th eighth of the columns, reads only that eighth of h_{t-1}, multiplies on mma.sync
//   tiles, and the 8 partial sums of each output are added through distributed shared memory in
//   rank order (deterministic) by the CTA that owns the output. One cluster (H <= 256) needs only
//   the cluster barrier per step and keeps h_t in shared memory; more exchange it through L2.
// * General (any shape/dtype): csrc/rnn_driver.h — one cuBLAS GEMM + one activation
//   per step on the current stream.
// The large GEMMs around the recurrence (and the general path's per-step products) run in TF32
// for fp32 under the same cudnn.allow_tf32 flag (Tf32Gemm below), in true fp32 otherwise.
//
// Step barriers (measured on an H200 for 132 CTAs: grid.sync 0.98 us, flag barrier 0.92 us): a
// whole-grid barrier costs about a microsecond a step. Steps end with cooperative groups'
// grid.sync, a flag barrier (one arrival counter, monotonically increasing, so it never needs
// resetting) or, where W_hh's rows fit one thread-block cluster (<= 16 CTAs on sm_90, i.e.
// H <= 256 at 16 rows per CTA), the cluster's hardware barrier; there each CTA keeps the outputs
// it computes in its own shared memory and the next step reads h_{t-1} from the owning CTAs'
// shared memory (distributed shared memory) instead of L2. grid.sync is the default: on an H200
// at B8 H256 it takes 3.5 us a step, the cluster variant 6.7-7.0 (10.9 while it pushed every
// output into every CTA, 16 scalar remote stores an output; bench/NOTES.md). With
// the exchange no barrier spans the grid: the outputs travel as step-tagged words that the next
// step's readers wait on (exchange_wait); the tensor-core kernel across clusters then has only the
// cluster barrier between its MMA and its reduce (its partial sums double-buffered). It is that
// kernel's default (1.04-1.16x the flag barrier on an H200, mma_exchange_wanted); the FMA kernel,
// which it left slower, takes it only with RNNKERN_RNN_BARRIER=exchange.
//
// * On chip (opt-in, RNNKERN_RNN_PATH=cta; B <= 16, tensor cores): the whole recurrence on one SM
//   (W_hh and h in its shared memory, two __syncthreads a step), or on one cluster of up to 16 CTAs
//   (H <= 1024 in 16-bit, 640 in fp32) each holding 64-256 rows of W_hh and a copy of h, h_t
//   all-gathered through distributed shared memory, two __syncthreads and one cluster barrier a step
//   (rnn_on_chip_kernel); RNNKERN_RNN_ON_CHIP_W=registers holds W_hh in registers instead, as the
//   MMA's A operand with h as the n8 operand (rnn_on_chip_wreg_kernel; B <= 8, 64 rows a CTA,
//   H <= 512 fp32, 1024 16-bit).
//
// Set RNNKERN_RNN_PATH=general|persistent|cta to force a path (persistent and cta fall back when they do
// not fit; RNNKERN_RNN_CLUSTER=n sets cta's CTAs, RNNKERN_RNN_ON_CHIP_W=shared|registers where its W_hh sits), RNNKERN_RNN_MATH=fma|mma to force the persistent kernel's arithmetic (mma only where
// the dtype and flags allow tensor cores), RNNKERN_RNN_BARRIER=grid|flag|cluster|exchange to force the
// FMA kernel's barrier (exchange: the tensor-core kernel's across clusters too), RNNKERN_RNN_CTAS=n to
// cap its grid at n CTAs, RNNKERN_RNN_GRAPH=0 to run the general path's steps without the CUDA
// graphs it replays them as by default, RNNKERN_RNN_TRACE=1 to stamp the persistent kernels' steps (trace_stamp),
// RNNKERN_DEBUG=1 to log the choice.
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDADataType.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "../ops.h"
#include "../rnn_driver.h"
#include "blas.cuh"
#include "kernel_queries.cuh"
#include "tensor_core.cuh"

namespace rnnkern {
namespace {

namespace cg = cooperative_groups;

constexpr int kPersistThreads = 256;
constexpr int kMaxRows = 16;    // rows of W per CTA held in registers as accumulators
constexpr int64_t kMaxBatch = 64;  // above this the L2 traffic of re-reading h per CTA loses to GEMMs
// The tensor-core kernel reads only its k-slice of h, so larger batches fit it where shared memory
// allows (bf16 B256 H1024: 157 KB a CTA). Unmeasured: only RNNKERN_RNN_MATH=mma takes it above
// kMaxBatch, until a benchmark shows it beating the general path there.
constexpr int64_t kMmaMaxBatch = 256;
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

__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

// One cluster: element `local` of CTA `rank`'s shared memory (the same offset as in this CTA's).
template <typename T>
__device__ __forceinline__ T load_cluster_peer(const T* local, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return *cg::this_cluster().map_shared_rank(local, rank);
#else
  __trap();  // the host launches cluster kernels only from sm_90 code (see launch_persistent)
  return *local;
#endif
}

// How the CTAs of one persistent launch wait for each other at the end of every step. Each must
// also make the step's global writes visible to the other CTAs (their reads go to L2: ld.global.cg).
// kExchange: no barrier at all; the step's outputs also go to an exchange buffer as words that
// carry their step (ExchangeWord), and readers wait on the words themselves.
enum class StepBarrier { kGrid, kFlag, kCluster, kExchange };

// ---- the exchange (RNNKERN_RNN_BARRIER=exchange): no barrier across the grid -----------------------
// A step's critical path through a barrier is: outputs stored, the arrival's release fence waits for
// them, the arrival travels to L2, the waiters' polls see the count, then every CTA loads h_{t-1}
// from L2: four or five L2 round trips a step for a few hundred ns of arithmetic. Here each output
// is also stored as one word {value, step tag} (ExchangeWord; single-copy atomic: a reader never
// sees a value with another step's tag), and the next step's readers load those words and reload
// the ones whose tag is not yet theirs: about two round trips a step (NCCL's LL protocol does the
// same for small messages). Two buffers alternate by step. Reuse is safe without a barrier, row by
// row (each batch row's words are read and written by the same warp of each CTA at every step, in
// the FMA kernel; by whole clusters in the tensor-core one): the writer of row b of step s into
// buffer s % 2 has read row b of every CTA's step s - 1 outputs, each computed only after that CTA
// had read its row-b words of step s - 2 from the same buffer (exchange_rows says which rows are
// written). Every CTA must be resident (readers spin on writers): launched cooperatively.
constexpr long long kExchangeMaxPolls = 1ll << 22;  // (~2 s) a reader that waits longer traps instead of hanging

// One exchanged output of step `step` (the writer's): fp32 {value, step + 1} in 8 bytes; fp16 /
// bf16 {value's bits, step % 65535 + 1} in 4, half the traffic (a 16-bit tag never equals the one
// two steps back, which is what a word being rewritten holds, nor the zeroed buffer's 0).
template <typename scalar_t>
struct ExchangeWord {
  using type = unsigned long long;
  __device__ static type pack(scalar_t v, int step) {
    return (static_cast<type>(static_cast<unsigned int>(step) + 1u) << 32) | __float_as_uint(static_cast<float>(v));
  }
  __device__ static bool ready(type w, int step) {
    return static_cast<unsigned int>(w >> 32) == static_cast<unsigned int>(step) + 1u;
  }
  __device__ static float value(type w) { return __uint_as_float(static_cast<unsigned int>(w)); }
};
template <typename scalar_t>
struct ExchangeWord16 {
  using type = unsigned int;
  __device__ static unsigned int tag(int step) { return static_cast<unsigned int>(step) % 65535u + 1u; }
  __device__ static type pack(scalar_t v, int step) { return tag(step) << 16 | v.x; }
  __device__ static bool ready(type w, int step) { return w >> 16 == tag(step); }
  __device__ static float value(type w) {
    return static_cast<float>(scalar_t(static_cast<uint16_t>(w & 0xffffu), scalar_t::from_bits()));
  }
};
template <> struct ExchangeWord<c10::Half> : ExchangeWord16<c10::Half> {};
template <> struct ExchangeWord<c10::BFloat16> : ExchangeWord16<c10::BFloat16> {};

__device__ __forceinline__ void exchange_store(unsigned long long* word, unsigned long long w) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(word), "l"(w) : "memory");
}
__device__ __forceinline__ void exchange_store(unsigned int* word, unsigned int w) {
  asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(word), "r"(w) : "memory");
}
__device__ __forceinline__ unsigned long long exchange_load(const unsigned long long* word) {
  unsigned long long w;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(w) : "l"(word) : "memory");
  return w;
}
__device__ __forceinline__ unsigned int exchange_load(const unsigned int* word) {
  unsigned int w;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(w) : "l"(word) : "memory");
  return w;
}

// Rows b < exchange_rows(p, s) of step s's outputs go out as exchange words: the rows the next
// step reads (its live sequences; none after the last step). Not the others: forward, a finished
// row's zero written at step s could overwrite a word that a slower reader of that row still
// expects from step s - 2 (the writer read nothing of that row at step s, so nothing orders it
// after those reads). A row that is written was read by its writer at step s (forward: the next
// step's live rows are this step's), or, backward, was read by no one at step s - 1.
template <typename Params>
__device__ __forceinline__ int exchange_rows(const Params& p, int s) {
  if (s + 1 >= p.T) return 0;
  const int t_next = p.backward ? p.T - 2 - s : s + 1;
  return p.live ? p.live[t_next] : p.B;
}

// w[i] = the word at index at[i] (< 0: not wanted, a ready zero) of `words`, written at step
// `from`: all loads go out together, then only the words not yet of step `from` are reloaded,
// again together, until none is left. A writer that never comes traps (an error, not a hang).
template <typename scalar_t, int N>
__device__ __forceinline__ void exchange_wait(typename ExchangeWord<scalar_t>::type (&w)[N],
                                              const typename ExchangeWord<scalar_t>::type* words,
                                              const int64_t (&at)[N], int from) {
  static_assert(N <= 32, "one pending bit a word");
  using Word = ExchangeWord<scalar_t>;
#pragma unroll
  for (int i = 0; i < N; ++i) w[i] = at[i] >= 0 ? exchange_load(words + at[i]) : Word::pack(scalar_t(0), from);
  unsigned int pending = 0;
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (!Word::ready(w[i], from)) pending |= 1u << i;
  for (long long polls = 0; pending != 0; ++polls) {
    if (polls == kExchangeMaxPolls) __trap();
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (pending & (1u << i)) w[i] = exchange_load(words + at[i]);
    pending = 0;
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (!Word::ready(w[i], from)) pending |= 1u << i;
  }
}

// x[u][j] = h_{t-1}[b0 + j, c0 + 32 u] from step s - 1's exchange words `words`, zeros past H
// and for finished sequences (b >= live).
template <typename scalar_t, int kUnroll, int kBatchTile, typename acc_t>
__device__ __forceinline__ void exchange_read(acc_t (&x)[kUnroll][kBatchTile],
                                              const typename ExchangeWord<scalar_t>::type* words, int s, int b0, int c0,
                                              int live, int H) {
  constexpr int N = kUnroll * kBatchTile;
  int64_t at[N];
  typename ExchangeWord<scalar_t>::type w[N];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
#pragma unroll
    for (int j = 0; j < kBatchTile; ++j)
      at[u * kBatchTile + j] = c0 + 32 * u < H && b0 + j < live ? static_cast<int64_t>(b0 + j) * H + c0 + 32 * u : -1;
  exchange_wait<scalar_t>(w, words, at, s - 1);
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
#pragma unroll
    for (int j = 0; j < kBatchTile; ++j) x[u][j] = static_cast<acc_t>(ExchangeWord<scalar_t>::value(w[u * kBatchTile + j]));
}

__device__ __forceinline__ unsigned int load_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// One arrival with release semantics at GPU scope: this CTA's writes before it (its other threads'
// ones ordered before this thread by the CTA barrier) are visible to whoever acquires the count.
// red.release rather than __threadfence() + atomicAdd: __threadfence is a fence.sc (sequentially
// consistent, the heaviest fence), where a release needs acq_rel, as in CUTLASS's generic barrier.
__device__ __forceinline__ void arrive_release_gpu(unsigned int* p) {
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(p) : "memory");
}

// `arrivals` counts CTA arrivals over the whole launch: step s is complete everywhere once it
// reaches (s + 1) * gridDim.x, so the counter never needs resetting inside the kernel.
template <StepBarrier kBarrier>
__device__ __forceinline__ void step_barrier(unsigned int* arrivals, unsigned int target) {
  if constexpr (kBarrier == StepBarrier::kExchange) {
    // nothing to wait for: the next step's reads wait on the exchanged words themselves
  } else if constexpr (kBarrier == StepBarrier::kGrid) {
    cg::this_grid().sync();
  } else if constexpr (kBarrier == StepBarrier::kCluster) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::this_cluster().sync();  // barrier.cluster.arrive.release + wait.acquire
#else
    __trap();  // the host launches cluster kernels only from sm_90 code (see launch_persistent)
#endif
  } else {
    __syncthreads();  // every thread of this CTA has written its part of the step ...
    if (threadIdx.x == 0) {
      arrive_release_gpu(arrivals);  // ... and they are visible device-wide before the arrival is
      while (load_acquire_gpu(arrivals) < target) {
      }
    }
    __syncthreads();  // (the acquire above orders every thread's next reads after the others' writes)
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
  void* exchange;            // kExchange: 2 x (B, H) ExchangeWord<scalar_t>, zeroed before the launch
  long long* trace;         // step stamps (RNNKERN_RNN_TRACE=1, see trace_stamp); nullptr = off
  int T, B, H, rows;
  bool relu, backward;
};

// ---- step trace (RNNKERN_RNN_TRACE=1: a diagnostic, off by default) ----------------------------
// The persistent kernels miss their per-step models by several microseconds (bench/NOTES.md) and
// Nsight Compute cannot replay them (their barriers need every CTA resident). So thread 0 of the
// first and of the last CTA stamps the first kTraceSteps steps where a phase ends: stamp 0 is a
// step's start (the global timer in ns, then the SM's clock64), stamp k >= 1 the clock64 at the
// end of phase k. rnn_step_trace() returns the last traced launch; scripts/rnn_step_trace.py
// turns it into nanoseconds per phase. One predicated branch per stamp when off.
constexpr int kTraceSteps = 64, kTraceSlots = 8;  // per (CTA, step): timer, clock, then phases 1..6

__device__ __forceinline__ void trace_stamp(long long* trace, int s, int phase) {
  if (trace == nullptr || threadIdx.x != 0 || s >= kTraceSteps) return;
  const bool last = blockIdx.x + 1 == gridDim.x && gridDim.x > 1;
  if (blockIdx.x != 0 && !last) return;
  long long* row = trace + (static_cast<long long>(last) * kTraceSteps + s) * kTraceSlots;
  if (phase == 0) {
    unsigned long long ns;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
    row[0] = static_cast<long long>(ns);
    row[1] = clock64();
  } else {
    row[phase + 1] = clock64();
  }
}

// z = pre-activation (forward) or dL/dh_t (backward) of one output; h = its forward output h_t
// (backward only). forward: act(z); backward: z * act'(.). relu as torch's: forward zeroes only
// where z < 0 (clamp_min: NaN and -0.0 stay), backward only where h <= 0 (threshold_backward), so
// a NaN h passes z.
template <typename acc_t>
__device__ __forceinline__ acc_t step_epilogue(acc_t z, acc_t h, bool relu, bool backward) {
  if (!backward) return relu ? (z < acc_t(0) ? acc_t(0) : z) : tanh(z);
  return relu ? (h <= acc_t(0) ? acc_t(0) : z) : z * (acc_t(1) - h * h);
}

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
__global__ void __launch_bounds__(kPersistThreads, 1) rnn_persistent_kernel(PersistentParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kRows = rows_for_tile<kBatchTile>();
  extern __shared__ unsigned char smem_raw[];
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem_raw);
  // One cluster (kCluster): besides its rows of W, each CTA keeps the outputs it computes in a
  // B x H array laid out alike in every CTA, two of them (step s writes buffer s % 2, step s + 1
  // reads it), and a step reads h_{t-1}[b, c] from CTA c / rows's copy through distributed shared
  // memory instead of L2 (choose_rnn_path sizes them). Pulling 8 loads a lane in flight replaced
  // pushing each output into all 16 CTAs' copies, 16 scalar remote stores one after another.
  scalar_t* h_s = w_s + p.rows * p.H;
  const int r0 = blockIdx.x * p.rows;
  const int rows = min(p.rows, p.H - r0);  // <= kRows (choose_rnn_path)
  for (int i = threadIdx.x; i < rows * p.H; i += blockDim.x) w_s[i] = p.weight[static_cast<int64_t>(r0) * p.H + i];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // one cluster: every CTA must be running before another reads its shared memory
  if constexpr (kBarrier == StepBarrier::kCluster) cg::this_cluster().sync();
  else __syncthreads();
#else
  __syncthreads();
#endif

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  const int64_t step = static_cast<int64_t>(p.B) * p.H;
  auto* exchange_words = static_cast<typename ExchangeWord<scalar_t>::type*>(p.exchange);  // (kExchange)
  for (int s = 0; s < p.T; ++s) {
    trace_stamp(p.trace, s, 0);
    const int t = p.backward ? p.T - 1 - s : s;
    const scalar_t* prev = s == 0 ? p.state0 : p.seq + (p.backward ? t + 1 : t - 1) * step;
    // where this step reads h_{t-1}: L2 (ld.global.cg), or with one cluster after the first step
    // its own shared copy
    const scalar_t* prev_s = kBarrier == StepBarrier::kCluster && s > 0 ? h_s + ((s - 1) % 2) * step : nullptr;
    scalar_t* cur = p.seq + t * step;
    const int live = p.live ? p.live[t] : p.B;  // sequences b < live still run at step t
    const int live_next = kBarrier == StepBarrier::kExchange ? exchange_rows(p, s) : 0;
    for (int b0 = warp * kBatchTile; b0 < p.B; b0 += nwarps * kBatchTile) {
      // This lane's outputs, (r, j) = divmod(idx, kBatchTile) for idx = lane, lane + 32: their
      // pre-activations (and forward outputs, backward) are loaded first, so those L2 round trips
      // overlap the k-loop instead of following it one by one.
      constexpr int kOwned = (kRows * kBatchTile + 31) / 32;
      acc_t pre[kOwned], h_fwd[kOwned];
#pragma unroll
      for (int o = 0; o < kOwned; ++o) {
        const int idx = lane + 32 * o, r = idx / kBatchTile, b = b0 + idx % kBatchTile;
        pre[o] = h_fwd[o] = acc_t(0);
        if (idx < kRows * kBatchTile && r < rows && b < live) {
          const int64_t i = static_cast<int64_t>(b) * p.H + r0 + r;
          // (one cluster: prefetched into L1 during the previous step, see below; only this lane
          // reads and then overwrites cur[i])
          pre[o] = static_cast<acc_t>(kBarrier == StepBarrier::kCluster ? cur[i] : load_cg(cur + i));
          if (p.backward) h_fwd[o] = static_cast<acc_t>(p.act_out[t * step + i]);
        }
      }
      acc_t acc[kRows][kBatchTile];
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int j = 0; j < kBatchTile; ++j) acc[r][j] = acc_t(0);
      if (prev != nullptr && b0 < live) {
        // kUnroll columns per lane per pass, all their h_{t-1} loads issued before the FMAs: 16
        // L2 loads in flight per lane rather than one round trip per column. Each accumulator
        // still sums its columns in increasing order (lane, lane + 32, ...).
        constexpr int kUnroll = kBatchTile >= 8 ? 2 : 16 / kBatchTile;
        for (int c0 = lane; c0 < p.H; c0 += 32 * kUnroll) {
          acc_t x[kUnroll][kBatchTile];
          if (kBarrier == StepBarrier::kExchange && s > 0) {
            exchange_read<scalar_t, kUnroll, kBatchTile>(x, exchange_words + ((s - 1) % 2) * step, s, b0, c0, live, p.H);
          } else {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
              const int c = c0 + 32 * u;
#pragma unroll
              for (int j = 0; j < kBatchTile; ++j)
                x[u][j] = c < p.H && b0 + j < live
                              ? static_cast<acc_t>(prev_s != nullptr
                                                       ? load_cluster_peer(prev_s + (b0 + j) * p.H + c, c / p.rows)
                                                       : load_cg(prev + static_cast<int64_t>(b0 + j) * p.H + c))
                              : acc_t(0);
            }
          }
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const int c = c0 + 32 * u;
            if (c >= p.H) break;
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
              if (r < rows) {
                const acc_t w = static_cast<acc_t>(w_s[r * p.H + c]);
#pragma unroll
                for (int j = 0; j < kBatchTile; ++j) acc[r][j] += w * x[u][j];
              }
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
          constexpr int kLanes = 32;
          if (lane == (r * kBatchTile + j) % kLanes) {
            const int b = b0 + j, o = (r * kBatchTile + j) / kLanes;
            // finished sequence: output / gradient is zero from here on
            const acc_t y = b < live ? step_epilogue(pre[o] + sum, h_fwd[o], p.relu, p.backward) : acc_t(0);
            cur[static_cast<int64_t>(b) * p.H + r0 + r] = static_cast<scalar_t>(y);
            // the next step's readers take it from here (the value as stored)
            if (kBarrier == StepBarrier::kExchange && b < live_next)
              exchange_store(exchange_words + (s % 2) * step + static_cast<int64_t>(b) * p.H + r0 + r,
                             ExchangeWord<scalar_t>::pack(static_cast<scalar_t>(y), s));
            // into this CTA's copy; the step's cluster barrier publishes it to the others
            if constexpr (kBarrier == StepBarrier::kCluster) h_s[(s % 2) * step + b * p.H + r0 + r] = static_cast<scalar_t>(y);
          }
        }
      }
      if constexpr (kBarrier == StepBarrier::kCluster) {
        // The next step's pre-activations (and forward outputs) into L1 now: after the cluster
        // barrier its other loads come from shared memory, and an L2 round trip would lead.
        if (s + 1 < p.T) {
          const int64_t next = (p.backward ? t - 1 : t + 1) * step;
#pragma unroll
          for (int o = 0; o < kOwned; ++o) {
            const int idx = lane + 32 * o, r = idx / kBatchTile, b = b0 + idx % kBatchTile;
            if (idx < kRows * kBatchTile && r < rows && b < p.B) {
              const int64_t i = next + static_cast<int64_t>(b) * p.H + r0 + r;
              prefetch_l1(p.seq + i);
              if (p.backward) prefetch_l1(p.act_out + i);
            }
          }
        }
      }
    }
    trace_stamp(p.trace, s, 1);  // phase 1: loads, products, epilogue and stores (thread 0's warp)
    // step t complete everywhere (writes visible) before step t +- 1 reads it
    step_barrier<kBarrier>(p.arrivals, static_cast<unsigned int>(s + 1) * gridDim.x);
    trace_stamp(p.trace, s, 2);  // phase 2: the step barrier
  }
}

// ---- the tensor-core persistent kernel -----------------------------------------------------------

constexpr int kMmaClusterCtas = 8;      // the k-split: portable cluster size, each CTA 1/8 of W's columns
// Tensor cores from one full 16-row tile, or from 8 rows where H >= 512: below that the FMA
// kernel wastes nothing and needs no reduction. On an H200 at B8 the tensor-core kernel ran
// 1.53 ms against 1.87 (fp32 as TF32, H1024) and 1.30 against 1.52 (bf16, H512), but 1.11
// against 0.98 at H256 (bench/NOTES.md).
constexpr int64_t kMmaMinBatch = 16;
constexpr int64_t kMmaMinBatchLargeH = 8, kMmaLargeH = 512;
constexpr int64_t kMmaOneClusterMaxH = 256;  // one cluster (no grid barrier) up to this H

// PersistentParams (its `rows` unused) plus the tensor-core kernel's partition of W.
template <typename scalar_t>
struct MmaParams : PersistentParams<scalar_t> {
  int units;   // rows of W per cluster (a multiple of 16, so of kMmaClusterCtas too)
  int kslice;  // columns of W / h per CTA (a multiple of the fragment's k)
};

// Operands are stored in shared memory already in the tensor cores' format (fp32 rounded to tf32
// once, when staged), so the fragments are loaded as they are.
template <typename scalar_t>
__device__ __forceinline__ scalar_t mma_operand(scalar_t v) {
#if RNNKERN_HAS_SM80_TENSOR_CORES
  if constexpr (std::is_same_v<scalar_t, float>) return nvcuda::wmma::__float_to_tf32(v);
#endif
  return v;
}

// The operands' shared-memory layout, in 32-bit words (one fp32, or two 16-bit elements): a row of
// h_{t-1}'s or W's k-slice is kslice / (4 / elem_size) words, in groups of 8 (one mma.sync k-step:
// k8 for tf32, k16 for 16-bit). An m16n8 fragment gives lane (g, t) = (lane / 4, lane % 4) words t
// and t + 4 of rows g and g + 8 (A) and of W's row g (B), so each group is stored as words
// 0 4 1 5 2 6 3 7: the two words a lane needs are adjacent, one 8-byte load. The row stride is 8
// (mod 32) words, so the 16 lanes of a half-warp (rows g..g+3, words 2t..2t+1) hit 32 different
// banks.
__host__ __device__ constexpr int mma_ldk(int kslice, int elem_size) {
  const int words = kslice * elem_size / 4;
  return (words + (40 - words % 32) % 32) * 4 / elem_size;
}
// Element c of a row at its stored position (mma_ldk's order within each group of 8 words).
__host__ __device__ constexpr int mma_k_position(int c, int elem_size) {
  const int per_word = 4 / elem_size, w = c / per_word, j = w % 8;
  return ((w - j) + (j % 4) * 2 + j / 4) * per_word + c % per_word;
}
__host__ __device__ constexpr int mma_ldu(int units) { return units + 4; }
__host__ __device__ constexpr int round_up16(int n) { return (n + 15) / 16 * 16; }

#if RNNKERN_HAS_SM80_TENSOR_CORES
// At most kMmaWarpM m16 tiles x kMmaWarpN n8 tiles of accumulators in one warp at a time (32 fp32
// registers).
constexpr int kMmaWarpM = 4, kMmaWarpN = 2;

// k-steps 0 .. k_steps - 1 in order, two a pass: load(ks, buf) fills fragment buffer buf (0 or 1, a
// compile-time constant, so the buffers stay in registers) and multiply(buf) feeds it to the MMAs;
// the next k-step's loads go out before this one's MMAs.
template <typename Load, typename Multiply>
__device__ __forceinline__ void pipelined_k_steps(int k_steps, const Load& load, const Multiply& multiply) {
  const std::integral_constant<int, 0> first;
  const std::integral_constant<int, 1> second;
  load(0, first);
  int ks = 0;
  for (; ks + 2 <= k_steps; ks += 2) {
    load(ks + 1, second);
    multiply(first);
    if (ks + 2 < k_steps) load(ks + 2, first);
    multiply(second);
  }
  if (ks < k_steps) multiply(first);  // an odd count's last k-step
}

// part[b, n] = sum_k h[b, k] W[n, k] over k_steps groups of 8 words for the kM m16 tiles from row
// m_first * 16 and the kN n8 tiles n_first, n_first + n_stride, ... (h, w: mma_ldk's layout, row
// stride ldk_words; part: fp32, row stride ldu). One A fragment serves the kN tiles, one B fragment
// the kM tiles, and the kM x kN accumulators are independent chains. Sizes are template arguments,
// so the k-loop has no size-dependent branch and the next k-step's loads go out under this one's
// MMAs.
template <typename Native, int kM, int kN>
__device__ __forceinline__ void mma_tile_block(const uint32_t* h, const uint32_t* w, float* part, int m_first,
                                               int n_first, int n_stride, int k_steps, int ldk_words, int ldu,
                                               int lane) {
  const int g = lane / 4, t = lane % 4;
  float acc[kM][kN][4] = {};
  // this lane's words of A's row g of the first m tile and of B's (W's) row g of the first n tile
  const uint32_t* a_row = h + (m_first * 16 + g) * ldk_words + 2 * t;
  const uint32_t* b_row = w + (n_first * 8 + g) * ldk_words + 2 * t;
  uint32_t a[2][kM][4], b[2][kN][2];  // k-step ks's fragments in [ks % 2], the next one's loaded beside them
  const auto load = [&](int ks, auto buf) {
    uint32_t(&a_ks)[kM][4] = a[buf];
    uint32_t(&b_ks)[kN][2] = b[buf];
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      const uint2 lo = *reinterpret_cast<const uint2*>(a_row + i * 16 * ldk_words + ks * 8);
      const uint2 hi = *reinterpret_cast<const uint2*>(a_row + (i * 16 + 8) * ldk_words + ks * 8);
      a_ks[i][0] = lo.x, a_ks[i][2] = lo.y, a_ks[i][1] = hi.x, a_ks[i][3] = hi.y;
    }
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const uint2 v = *reinterpret_cast<const uint2*>(b_row + j * n_stride * 8 * ldk_words + ks * 8);
      b_ks[j][0] = v.x, b_ks[j][1] = v.y;
    }
  };
  const auto multiply = [&](auto buf) {
#pragma unroll
    for (int i = 0; i < kM; ++i)
#pragma unroll
      for (int j = 0; j < kN; ++j) mma_tile<Native>(acc[i][j], a[buf][i], b[buf][j]);
  };
  pipelined_k_steps(k_steps, load, multiply);
  // accumulators (g, 2t..2t+1) and (g + 8, 2t..2t+1) of each tile
#pragma unroll
  for (int i = 0; i < kM; ++i)
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      float* out = part + ((m_first + i) * 16 + g) * ldu + (n_first + j * n_stride) * 8 + 2 * t;
      *reinterpret_cast<float2*>(out) = make_float2(acc[i][j][0], acc[i][j][1]);
      *reinterpret_cast<float2*>(out + 8 * ldu) = make_float2(acc[i][j][2], acc[i][j][3]);
    }
}

// part[b, n] = sum_k h[b, k] W[n, k] for b < m_tiles * 16, n < n_tiles * 8, on mma.sync m16 x n8
// tiles (k8 tf32, k16 16-bit). Warp w owns the n tiles w, w + nwarps, ... for every m tile. The WMMA
// loop this replaces ran one 16 x 16 tile's k-steps in series through generic loads: ~180 clocks a
// k-step on an H200 whatever the dtype and batch (bench/NOTES.md). Each output is summed over k in
// increasing order by one warp: the same bits on every run.
template <typename Native>
__device__ __forceinline__ void mma_partial_sums(const uint32_t* h, const uint32_t* w, float* part, int m_tiles,
                                                 int n_tiles, int k_steps, int ldk_words, int ldu, int warp,
                                                 int nwarps, int lane) {
  for (int n_first = warp; n_first < n_tiles; n_first += kMmaWarpN * nwarps) {
    const bool two_n = n_first + nwarps < n_tiles;  // warp-uniform, as every size below
    for (int m_first = 0; m_first < m_tiles; m_first += kMmaWarpM) {
      const auto block = [&](auto m_count, auto n_count) {
        mma_tile_block<Native, decltype(m_count)::value, decltype(n_count)::value>(
            h, w, part, m_first, n_first, nwarps, k_steps, ldk_words, ldu, lane);
      };
      using One = std::integral_constant<int, 1>;
      using Two = std::integral_constant<int, 2>;
      static_assert(kMmaWarpM == 4 && kMmaWarpN == 2, "the dispatch below covers 1..4 x 1..2 tiles");
      switch (m_tiles - m_first) {  // 4 or more: kMmaWarpM
        case 1: two_n ? block(One{}, Two{}) : block(One{}, One{}); break;
        case 2: two_n ? block(Two{}, Two{}) : block(Two{}, One{}); break;
        case 3: two_n ? block(std::integral_constant<int, 3>{}, Two{}) : block(std::integral_constant<int, 3>{}, One{}); break;
        default: two_n ? block(std::integral_constant<int, 4>{}, Two{}) : block(std::integral_constant<int, 4>{}, One{}); break;
      }
    }
  }
}
#endif

// Per step, in CTA j of cluster q (units u0 = q * units ..., columns k0 = j * kslice ...):
//   load seq[t] (and act_out[t], backward) of the outputs this thread writes  -> registers
//   stage h_{t-1}[b, k0 : k0 + kslice] for the live b (zeros elsewhere)       -> h_s  (B16 x kslice)
//   partial[b, n] = sum_k h_s[b, k] W[u0 + n, k0 + k]  on mma.sync tiles         -> part_s (B16 x units)
//   cluster barrier
//   for the outputs this CTA owns (units j * units/8 ...): z = seq[t] + sum over ranks 0..7 of
//   their partial (distributed shared memory, fixed order), epilogue, store
//   step barrier (cluster barrier with one cluster, flag barrier across clusters)
// One cluster (kOneCluster) stages h only at step 0: its reduce also writes each output into the
// h_s of the rank whose k-slice holds it (distributed shared memory), and the closing cluster barrier
// publishes it, so h_t never makes an L2 round trip. Its early outputs' stores to seq[t] follow that
// barrier, so that its release does not wait for them.
// kExchange (several clusters; the default, mma_exchange_wanted): no flag barrier. The outputs also
// go out as step-tagged exchange words (exchange_store) and the next step stages h_{t-1} from them,
// waiting on the words themselves (as the FMA kernel's exchange_read). No barrier ends the step
// either: the partial sums alternate between two buffers by step, so a rank that moves on writes
// step s + 1's into the buffer no peer reads any more, and step s + 2's, into step s's buffer, only
// after the next cluster barrier, which every peer reaches after its step-s reduce.
template <typename scalar_t, bool kOneCluster, bool kExchange = false>
__global__ void __launch_bounds__(kPersistThreads, 1) rnn_persistent_mma_kernel(MmaParams<scalar_t> p) {
  static_assert(!(kOneCluster && kExchange), "one cluster has no step barrier across clusters to replace");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Native = typename NativeOf<scalar_t>::type;  // same bits, the type mma.sync takes
  cg::cluster_group cluster = cg::this_cluster();
  if (cluster.num_blocks() != kMmaClusterCtas) __trap();  // every index below assumes 8 ranks
  const int rank = static_cast<int>(cluster.block_rank());
  const int u0 = static_cast<int>(blockIdx.x) / kMmaClusterCtas * p.units;
  const int k0 = rank * p.kslice;
  const int ldk = mma_ldk(p.kslice, sizeof(scalar_t)), ldu = mma_ldu(p.units);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem_raw);                    // units x ldk: W[u0 + n, k0 + c]
  scalar_t* h_s = w_s + p.units * ldk;                                        // B16 x ldk: h_{t-1}[b, k0 + c]
  float* part_s = reinterpret_cast<float*>(h_s + round_up16(p.B) * ldk);      // B16 x ldu: partial z[b, u0 + n]
  const int part_elems = round_up16(p.B) * ldu;  // kExchange: two such buffers, step s in s % 2's
  for (int i = threadIdx.x; i < p.units * p.kslice; i += blockDim.x) {
    const int n = i / p.kslice, c = i % p.kslice, u = u0 + n, k = k0 + c;
    w_s[n * ldk + mma_k_position(c, sizeof(scalar_t))] =
        u < p.H && k < p.H ? mma_operand(p.weight[static_cast<int64_t>(u) * p.H + k]) : scalar_t(0);
  }
  // h_s zeroed once: rows past B and columns past H are multiplied (tile padding) but never staged
  // or written; with one cluster no other row is restaged after step 0 either (below)
  for (int i = threadIdx.x; i < round_up16(p.B) * ldk; i += blockDim.x) h_s[i] = scalar_t(0);
  float* parts[kMmaClusterCtas];  // every rank's partial sums, in rank order
#pragma unroll
  for (int c = 0; c < kMmaClusterCtas; ++c) parts[c] = cluster.map_shared_rank(part_s, c);
  __syncthreads();

  const int warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  // staging h: thread tid takes elements tid, tid + blockDim.x, ... of the (b, c < kslice) grid
  const int b_first = threadIdx.x / p.kslice, c_first = threadIdx.x % p.kslice;
  const int step_b = blockDim.x / p.kslice, step_c = blockDim.x % p.kslice;
  const auto stage_step = [&](int& b, int& c) {
    b += step_b;
    c += step_c;
    if (c >= p.kslice) {
      c -= p.kslice;
      ++b;
    }
  };
  const int own = p.units / kMmaClusterCtas;  // outputs per sequence this CTA reduces and writes
  const int outputs = p.B * own;              // this CTA's: output i is (b, n) = divmod(i, own), n in rank's units
  const int64_t step = static_cast<int64_t>(p.B) * p.H;
  auto* exchange_words = static_cast<typename ExchangeWord<scalar_t>::type*>(p.exchange);  // (kExchange)
  for (int s = 0; s < p.T; ++s) {
    trace_stamp(p.trace, s, 0);
    const int t = p.backward ? p.T - 1 - s : s;
    const scalar_t* prev = s == 0 ? p.state0 : p.seq + (p.backward ? t + 1 : t - 1) * step;
    scalar_t* cur = p.seq + t * step;
    const int live = p.live ? p.live[t] : p.B;
    const int live_next = kExchange ? exchange_rows(p, s) : 0;
    const bool has_prev = prev != nullptr && live > 0;  // uniform over the cluster
    const int part_offset = kExchange ? (s % 2) * part_elems : 0;  // this step's partial sums
    // Output i's pre-activation seq[t] (z) and, backward, its forward output h_t (h): zeros where
    // the output is not written from them (finished sequence, u >= H, i past the end).
    const auto load_inputs = [&](int i, float& z, float& h) {
      const int b = i / own, u = u0 + rank * own + i % own;
      z = h = 0.f;
      if (i < outputs && b < live && u < p.H) {
        const int64_t o = static_cast<int64_t>(b) * p.H + u;
        z = static_cast<float>(load_cg(cur + o));  // output o of seq[t] is written only below, by this thread
        if (p.backward) h = static_cast<float>(p.act_out[t * step + o]);
      }
    };
    // Neither depends on the recurrence, so this thread's first kEarly outputs load them now: their
    // L2 round trip overlaps the staging and the MMA instead of following the cluster barrier.
    // Outputs past kEarly per thread (B x units/8 > 8 x 256) load them after it, as before.
    constexpr int kEarly = 8;
    float z_early[kEarly], h_early[kEarly];
#pragma unroll
    for (int e = 0; e < kEarly; ++e) load_inputs(threadIdx.x + e * blockDim.x, z_early[e], h_early[e]);
    if (has_prev) {
      const int m16 = round_up16(live);  // finished sequences' rows are not multiplied
      // kStage loads in flight per thread before their stores (one L2 round trip per kStage
      // elements, not per element); the (b, c) walk steps by blockDim.x elements without a division.
      // One cluster stages only h_0: after that the reduce leaves h_t in h_s itself (rows past live
      // then hold finished sequences' last outputs or zeros, where staging wrote zeros: they only
      // reach partial sums of rows past live, which no output reads).
      constexpr int kStage = 16;
      const int staged_rows = kOneCluster && s > 0 ? 0 : m16;
      for (int b = b_first, c = c_first; b < staged_rows;) {
        scalar_t v[kStage];
        int bl = b, cl = c;
        if (kExchange && s > 0) {  // h_{t-1} from step s - 1's exchange words
          using Word = ExchangeWord<scalar_t>;
          typename Word::type w[kStage];
          int64_t at[kStage];  // word index, -1: not wanted (a zero)
#pragma unroll
          for (int u = 0; u < kStage; ++u) {
            at[u] = bl < live && k0 + cl < p.H ? static_cast<int64_t>(bl) * p.H + k0 + cl : -1;
            stage_step(bl, cl);
          }
          exchange_wait<scalar_t>(w, exchange_words + ((s - 1) % 2) * step, at, s - 1);
#pragma unroll
          for (int u = 0; u < kStage; ++u) v[u] = static_cast<scalar_t>(Word::value(w[u]));
        } else {
#pragma unroll
          for (int u = 0; u < kStage; ++u) {
            v[u] = bl < live && k0 + cl < p.H ? load_cg(prev + static_cast<int64_t>(bl) * p.H + k0 + cl) : scalar_t(0);
            stage_step(bl, cl);
          }
        }
#pragma unroll
        for (int u = 0; u < kStage; ++u) {
          if (b < staged_rows) h_s[b * ldk + mma_k_position(c, sizeof(scalar_t))] = mma_operand(v[u]);
          stage_step(b, c);
        }
      }
      __syncthreads();
      trace_stamp(p.trace, s, 1);  // phase 1: early loads issued, h_{t-1}'s slice staged
      mma_partial_sums<Native>(reinterpret_cast<const uint32_t*>(h_s), reinterpret_cast<const uint32_t*>(w_s),
                               part_s + part_offset, m16 / 16, p.units / 8, p.kslice * sizeof(scalar_t) / 32,
                               ldk * sizeof(scalar_t) / 4, ldu, warp, nwarps, threadIdx.x % 32);
      trace_stamp(p.trace, s, 2);  // phase 2: thread 0's warp's tiles multiplied
    }
    cluster.sync();  // every rank's partial sums are in its shared memory (release / acquire)
    trace_stamp(p.trace, s, 3);    // phase 3: the cluster barrier
    // Output i's sum of the 8 ranks' partial sums (distributed shared memory, rank order), 0 where
    // the output is not written from it.
    const auto partial_sum = [&](int i) {
      const int b = i / own, n = rank * own + i % own;
      float sum = 0.f;
      if (has_prev && i < outputs && b < live && u0 + n < p.H) {
#pragma unroll
        for (int c = 0; c < kMmaClusterCtas; ++c) sum += parts[c][part_offset + b * ldu + n];
      }
      return sum;
    };
    // Output i from its pre-activation z, forward output h (backward) and partial sum; stored to
    // seq[t] now or (store_now false) by the caller, and returned.
    const auto write_output = [&](int i, float z, float h, float sum, bool store_now) {
      const int b = i / own, u = u0 + rank * own + i % own;
      if (u >= p.H) return 0.f;
      // finished sequence: output / gradient is zero from here on
      const float y = b < live ? step_epilogue(z + sum, h, p.relu, p.backward) : 0.f;
      if (store_now) cur[static_cast<int64_t>(b) * p.H + u] = static_cast<scalar_t>(y);
      if (kExchange && b < live_next)  // the next step stages it from here (the value as stored)
        exchange_store(exchange_words + (s % 2) * step + static_cast<int64_t>(b) * p.H + u,
                       ExchangeWord<scalar_t>::pack(static_cast<scalar_t>(y), s));
      // One cluster: into the h_s of the rank whose k-slice holds column u (u0 = 0), the value
      // staging it from seq[t] would give (distributed shared memory; the step's closing cluster
      // barrier publishes it). h_t never makes the L2 round trip.
      if constexpr (kOneCluster)
        cluster.map_shared_rank(h_s, u / p.kslice)[b * ldk + mma_k_position(u % p.kslice, sizeof(scalar_t))] =
            mma_operand(static_cast<scalar_t>(y));
      return y;
    };
    // The early outputs' partial sums before any of their stores: the exchange store is a compiler
    // barrier (a "memory" clobber), so interleaved with them each output's loads waited out a
    // distributed-shared-memory round trip of their own (~0.6 us an output at B64 H1024 on an H200).
    float sum_early[kEarly];
#pragma unroll
    for (int e = 0; e < kEarly; ++e) sum_early[e] = partial_sum(threadIdx.x + e * blockDim.x);
    // One cluster stores its early outputs to seq[t] after the step's closing barrier, whose
    // release would otherwise wait for those global stores to complete.
    float y_early[kEarly];
#pragma unroll
    for (int e = 0; e < kEarly; ++e) {
      const int i = threadIdx.x + e * blockDim.x;
      if (i < outputs) y_early[e] = write_output(i, z_early[e], h_early[e], sum_early[e], !kOneCluster);
    }
    for (int i = threadIdx.x + kEarly * blockDim.x; i < outputs; i += blockDim.x) {
      float z, h;
      load_inputs(i, z, h);
      write_output(i, z, h, partial_sum(i), true);
    }
    trace_stamp(p.trace, s, 4);  // phase 4: partial sums reduced, outputs written
    // step t complete everywhere before step t +- 1 reads it, and no rank overwrites its partial
    // sums while another still reads them (kExchange: neither needs a barrier, see above)
    if constexpr (kOneCluster) {
      cluster.sync();
#pragma unroll
      for (int e = 0; e < kEarly; ++e) {
        const int i = threadIdx.x + e * blockDim.x, b = i / own, u = rank * own + i % own;
        if (i < outputs && u < p.H) cur[static_cast<int64_t>(b) * p.H + u] = static_cast<scalar_t>(y_early[e]);
      }
    } else if constexpr (!kExchange) {
      step_barrier<StepBarrier::kFlag>(p.arrivals, static_cast<unsigned int>(s + 1) * gridDim.x);
    }
    trace_stamp(p.trace, s, 5);  // phase 5: the step barrier
  }
  // No CTA may exit while a cluster peer can still read its shared memory. The last flag barrier
  // already orders every read before every exit, but through global memory, which the
  // distributed-shared-memory rules (and compute-sanitizer's racecheck) do not count; the exchange
  // has no barrier after its last reduce. (One cluster ends every step with the cluster barrier.)
  if constexpr (!kOneCluster) cluster.sync();
#else
  __trap();  // launched only from sm_90 code (launch_mma checks the binary's version)
#endif
}

// ---- W_hh on chip: one CTA, or one cluster of CTAs by rows (RNNKERN_RNN_PATH=cta; opt-in) ------
// The whole recurrence on one SM, or on one thread-block cluster of up to 16 (sm_90): no grid
// barrier and no L2 round trip a step. CTA (rank) r of C holds rows r * U .. r * U + U - 1 of W_hh
// (U = H_pad / C, a multiple of 64, at most 256) over all of k, and a whole copy of h_{t-1} (B <= 16:
// one m16 tile), so its products need nothing from the other CTAs. 16 warps: warp w owns the n8
// tiles w % 8, w % 8 + 8, ... of its rows (U / 64 of them) over half of k (w / 8).
// Per step: both halves multiply (mma.sync, mma_ldk's permuted layout), the upper half stores its
// partial sums, __syncthreads, the lower half adds them (fixed order: bitwise repeatable), applies
// the epilogue from its accumulators' registers and writes h_t into h_s (rounded as the MMA takes
// it). One CTA: then a second __syncthreads. A cluster (two h buffers alternating by step, so no rank
// overwrites what a slower one still multiplies): __syncthreads, every thread copies 16-byte pieces
// of this CTA's columns of h_t into every other rank's buffer (distributed shared memory), and
// arrives at the cluster barrier; the next step waits on it after issuing its own loads. Then the
// outputs go to seq[t]. An all-gather of h_t rather than the k split of the tensor-core kernel: each
// rank sends and receives B x H elements a step whatever C, and no reduce sits between the MMA and
// the epilogue.
// fp32 W (TF32) is stored as TF32 actually is: the top 24 bits of each value (the MMA ignores the
// low 13), in a 16-bit plane and an 8-bit plane (192 KB at one CTA and H256, which 256 KB of fp32 W
// would not fit). bench/NOTES.md (twenty-second and twenty-third sessions) has the arithmetic.
constexpr int kOnChipThreads = 512;
constexpr int kOnChipMaxBatch = 16;
constexpr int kOnChipMaxTilesPerWarp = 4;  // n8 tiles a warp: U / 64, at most 256 rows a CTA
constexpr int kOnChipMaxCtas = kMaxClusterCtas;

// The padded H: a multiple of 64 (fp32: whole 32-word swizzle rows in the planes; 16-bit: k-halves
// of whole k16 steps; rows: 8 groups of n8 tiles).
__host__ __device__ constexpr int on_chip_hpad(int H) { return (H + 63) / 64 * 64; }
// Shared memory of a CTA holding `rows` rows of W, in order: W (16-bit: rows x mma_ldk(hpad, 2)
// elements; fp32: the hi16 plane, rows x hpad / 2 words, then the lo8 plane, rows x hpad / 4 words),
// h_s (`buffers` x 16 rows x mma_ldk(hpad, elem) elements; two in a cluster), part_s
// (16 x (rows + 8) fp32).
__host__ __device__ constexpr size_t on_chip_w_bytes(int rows, int hpad, int elem_size) {
  return elem_size == 4 ? static_cast<size_t>(rows) * hpad * 3 : static_cast<size_t>(rows) * mma_ldk(hpad, 2) * 2;
}
// h's buffers: two alternating by step in a cluster (a rank writes step s's h_t into buffer (s + 1) % 2
// of every rank while a slower one may still multiply buffer s % 2), one in one CTA (its
// __syncthreads order the reads before the writes).
__host__ __device__ constexpr int on_chip_h_buffers(int ctas) { return ctas > 1 ? 2 : 1; }
__host__ __device__ constexpr size_t on_chip_h_bytes(int hpad, int elem_size) {
  return static_cast<size_t>(16) * mma_ldk(hpad, elem_size) * elem_size;
}
__host__ __device__ constexpr size_t on_chip_smem(int hpad, int ctas, int elem_size) {
  const int rows = hpad / ctas;
  return on_chip_w_bytes(rows, hpad, elem_size) + on_chip_h_buffers(ctas) * on_chip_h_bytes(hpad, elem_size) +
         static_cast<size_t>(16) * (rows + 8) * sizeof(float);
}
// The W-in-registers kernel (rnn_on_chip_wreg_kernel, below).
constexpr int kWregMaxSteps = 16;  // a warp's k-steps at most: 64 registers of W fragments
constexpr int kWregLdp = 24;       // part_s's row stride (floats): 24 (mod 32) -> conflict-free float2

// k-steps of a warp (a quarter of H_pad; k8 tf32, k16 16-bit)
__host__ __device__ constexpr int on_chip_wreg_steps(int hpad, int elem_size) { return hpad / 4 / (elem_size == 4 ? 8 : 16); }
// Shared memory: h_s (one buffer, two in a cluster) and the three upper quarters' partial sums
// (64 rows x kWregLdp fp32 each).
__host__ __device__ constexpr size_t on_chip_wreg_smem(int hpad, int ctas, int elem_size) {
  return on_chip_h_buffers(ctas) * on_chip_h_bytes(hpad, elem_size) + static_cast<size_t>(3) * 64 * kWregLdp * sizeof(float);
}

// The planes' 32-bit / 16-bit unit of the value pair p (positions 2p, 2p + 1 of mma_k_position's
// order) in W's (local) row n: XOR-swizzled by the row's place in its group of 8, so the 8 rows of
// one fragment load (lanes g = 0..7) hit different banks without padding (none is left at H256).
__host__ __device__ constexpr int on_chip_pair_unit(int n, int p) { return p ^ ((n % 8) * 4); }

#if RNNKERN_HAS_SM80_TENSOR_CORES
// The cluster barrier in its two halves. arrive.release: this thread's earlier shared-memory writes
// (its stores into the other ranks' h too) visible to every thread of the cluster that waits after
// it; wait.acquire: every thread of the cluster has arrived. (The SASS of the release is a
// MEMBAR.ALL.GPU before the arrival, as for cooperative groups' cluster.sync(): it waits for this
// thread's outstanding global stores too, so the step's stores to seq follow the arrival.) .aligned:
// the whole warp executes each, converged.
__device__ __forceinline__ void on_chip_cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#else
  __trap();  // the host launches a cluster (gridDim.x > 1) only from sm_90 code (launch_on_chip)
#endif
}
__device__ __forceinline__ void on_chip_cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// 16 bytes into CTA `rank`'s shared memory at this CTA's shared address `smem_addr`.
__device__ __forceinline__ void on_chip_store_peer(uint32_t smem_addr, uint32_t rank, const uint4& v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smem_addr), "r"(rank));
  asm volatile("st.shared::cluster.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(remote), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
#else
  __trap();
#endif
}

// The on-chip kernels' launch is one cluster spanning the grid, ranks in blockIdx order.
__device__ __forceinline__ void on_chip_check_cluster(int ctas, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (ctas > 1) {
    uint32_t cluster_ctas, cluster_rank;
    asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(cluster_ctas));
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(cluster_rank));
    if (static_cast<int>(cluster_ctas) != ctas || static_cast<int>(cluster_rank) != rank) __trap();
  }
#endif
}

// h's buffers zeroed (the padding rows b >= B and columns >= H stay zero), h_0 placed in buffer 0 in
// mma_k_position's order, then (a cluster) every rank's buffers zeroed before any writes step 0's
// outputs into them.
template <typename scalar_t>
__device__ __forceinline__ void on_chip_stage_h0(const PersistentParams<scalar_t>& p, scalar_t* h_bufs, int buffers,
                                                 int ldh, int ctas) {
  for (int i = threadIdx.x; i < buffers * 16 * ldh; i += blockDim.x) h_bufs[i] = scalar_t(0);
  __syncthreads();  // zeroed before h_0's elements land
  if (p.state0 != nullptr)
    for (int i = threadIdx.x; i < p.B * p.H; i += blockDim.x)
      h_bufs[i / p.H * ldh + mma_k_position(i % p.H, sizeof(scalar_t))] = mma_operand(p.state0[i]);
  __syncthreads();
  if (ctas > 1) {
    on_chip_cluster_arrive();
    on_chip_cluster_wait();
  }
}

// The h buffer step s multiplies (its h_{t-1}); step s writes h_t into on_chip_h(..., s + 1, ...).
template <typename scalar_t>
__device__ __forceinline__ scalar_t* on_chip_h(scalar_t* h_bufs, int s, int buffers, int ldh) {
  return h_bufs + (s % buffers) * 16 * ldh;
}

// After the epilogue wrote this CTA's h_t (columns u0 .. u0 + rows - 1 of rows < B) into h_next. A
// cluster: the all-gather (those columns are one contiguous run of each h_t row, as mma_k_position
// permutes within aligned groups of 8 words and u0 is a multiple of 64), copied in 16-byte pieces
// into the same place in every other rank, starting with the next rank (so the ranks do not all
// write to one at once; a warp's 32 pieces are consecutive pieces of one rank's rows), then the
// arrival that the next step's wait (or the one after the loop) matches. One CTA: h_t in h_s before
// the next step multiplies it.
template <typename scalar_t>
__device__ __forceinline__ void on_chip_send(const scalar_t* h_next, int ldh, int u0, int rows, int B, int ctas, int rank,
                                             bool publish) {
  if (ctas == 1) {
    __syncthreads();
    return;
  }
  __syncthreads();  // this CTA's h_t written
  if (publish) {
    const int row_chunks = rows * static_cast<int>(sizeof(scalar_t)) / 16, rank_chunks = B * row_chunks;
    const unsigned char* next_bytes = reinterpret_cast<const unsigned char*>(h_next);
#pragma unroll 1
    for (int i = threadIdx.x; i < (ctas - 1) * rank_chunks; i += blockDim.x) {
      const int q = 1 + i / rank_chunks, b = i % rank_chunks / row_chunks, c = i % row_chunks;
      const int offset = (b * ldh + u0) * static_cast<int>(sizeof(scalar_t)) + c * 16;  // mma_k_position(u0) == u0
      on_chip_store_peer(smem_u32(next_bytes + offset), static_cast<uint32_t>((rank + q) % ctas),
                         *reinterpret_cast<const uint4*>(next_bytes + offset));
    }
  }
  __syncwarp();  // (.aligned)
  on_chip_cluster_arrive();
}

// A cluster: the previous on_chip_send's arrivals all in (every rank's h_t in this CTA's h_s).
__device__ __forceinline__ void on_chip_wait(int ctas) {
  if (ctas == 1) return;
  __syncwarp();  // (.aligned)
  on_chip_cluster_wait();
}

// kTiles n8 tiles a warp: 64 x kTiles rows of W a CTA, H_pad / rows CTAs.
template <typename scalar_t, int kTiles>
__global__ void __launch_bounds__(kOnChipThreads, 1) rnn_on_chip_kernel(PersistentParams<scalar_t> p) {
  static_assert(kTiles >= 1 && kTiles <= kOnChipMaxTilesPerWarp, "64-256 rows a CTA");
  using Native = typename NativeOf<scalar_t>::type;
  constexpr bool kPlanes = std::is_same_v<scalar_t, float>;
  constexpr int kElem = sizeof(scalar_t);
  constexpr int rows = 64 * kTiles;           // this CTA's rows of W: units rank * rows ...
  constexpr bool kOneTile = kTiles == 1;      // its k-steps alternate two accumulators
  const int hpad = on_chip_hpad(p.H);
  // 256 rows a CTA never fit shared memory twice (H_pad >= 512: over 256 KB of W), so that instance
  // runs as one CTA only, and no clusters before sm_90: there the cluster code compiles away
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kClusters = kTiles < 4;
#else
  constexpr bool kClusters = false;
#endif
  const int ctas = kClusters ? static_cast<int>(gridDim.x) : 1, rank = kClusters ? static_cast<int>(blockIdx.x) : 0;
  if (p.B > kOnChipMaxBatch || blockDim.x != kOnChipThreads || static_cast<int>(gridDim.x) != ctas ||
      hpad != ctas * rows)
    __trap();  // (the host checks)
  on_chip_check_cluster(ctas, rank);
  const int u0 = rank * rows;                // this CTA's first unit
  const int ldh = mma_ldk(hpad, kElem);      // h_s's row stride (elements); also 16-bit W's
  const int ldh_words = ldh * kElem / 4;
  constexpr int ldp = rows + 8;              // part_s's row stride (floats): 8 (mod 32), conflict-free float2
  const int k_steps = hpad * kElem / 32;     // groups of 8 words over the whole row
  const int half_steps = k_steps / 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  uint32_t* w_words = reinterpret_cast<uint32_t*>(smem_raw);  // 16-bit W, or fp32's hi16 plane
  scalar_t* h_bufs = reinterpret_cast<scalar_t*>(smem_raw + on_chip_w_bytes(rows, hpad, kElem));
  const int buffers = on_chip_h_buffers(ctas);
  float* part_s = reinterpret_cast<float*>(h_bufs + buffers * 16 * ldh);

  // this CTA's rows of W once: 16-bit in mma_k_position's order; fp32 rounded to TF32, split into the planes
  uint8_t* w_lo8 = smem_raw + static_cast<size_t>(rows) * hpad * 2;  // fp32's lo8 plane, after the hi16 plane
  for (int i = threadIdx.x; i < rows * hpad; i += blockDim.x) {
    const int n = i / hpad, c = i % hpad, u = u0 + n;
    const scalar_t v = u < p.H && c < p.H ? mma_operand(p.weight[static_cast<int64_t>(u) * p.H + c]) : scalar_t(0);
    const int pos = mma_k_position(c, kElem);
    if constexpr (kPlanes) {
      const uint32_t bits = __float_as_uint(v);
      const int slot = (n * hpad / 2 + on_chip_pair_unit(n, pos / 2)) * 2 + pos % 2;  // value slot in both planes
      reinterpret_cast<uint16_t*>(w_words)[slot] = static_cast<uint16_t>(bits >> 16);
      w_lo8[slot] = static_cast<uint8_t>(bits >> 8);
    } else {
      reinterpret_cast<scalar_t*>(w_words)[n * ldh + pos] = v;
    }
  }
  on_chip_stage_h0(p, h_bufs, buffers, ldh, ctas);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int n_group = warp % 8, k_half = warp / 8;
  const int64_t step = static_cast<int64_t>(p.B) * p.H;
  const bool upper_rows = p.B > 8;  // h's rows 8..15 hold sequences
  for (int s = 0; s < p.T; ++s) {
    trace_stamp(p.trace, s, 0);
    const int t_idx = p.backward ? p.T - 1 - s : s;
    scalar_t* cur = p.seq + t_idx * step;
    const int live = p.live ? p.live[t_idx] : p.B;
    const scalar_t* h_s = on_chip_h(h_bufs, s, buffers, ldh);    // h_{t-1}
    scalar_t* h_next = on_chip_h(h_bufs, s + 1, buffers, ldh);   // h_t, in every rank
    // The lower half's outputs: (row g or g + 8, unit u0 + tile * 8 + 2t + e) of its tiles. Their
    // pre-activations (and forward outputs, backward) do not depend on the recurrence: load now.
    float z[kTiles][4], hf[kTiles][4];
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int b = g + 8 * (r / 2), u = u0 + (n_group + 8 * j) * 8 + 2 * t + r % 2;
        z[j][r] = hf[j][r] = 0.f;
        if (k_half == 0 && b < live && u < p.H) {
          const int64_t o = static_cast<int64_t>(b) * p.H + u;
          z[j][r] = static_cast<float>(cur[o]);  // written only below, by this thread
          if (p.backward) hf[j][r] = static_cast<float>(p.act_out[t_idx * step + o]);
        }
      }
    if (s > 0) on_chip_wait(ctas);  // step s - 1's h_t in every rank's h_s
    trace_stamp(p.trace, s, 1);  // phase 1: the loads above issued, the cluster's wait
    // acc[j]: tile j's sums; with one tile a warp, acc[0] takes the even k-steps and acc[1] the odd
    // ones (two independent MMA chains), added at the end
    float acc[kOneTile ? 2 : kTiles][4] = {};
    if (live > 0) {
      // this lane's words of h's rows g and g + 8, and of W's row (tile * 8 + g), this half of k
      const uint32_t* a_row = reinterpret_cast<const uint32_t*>(h_s) + g * ldh_words + 2 * t + k_half * half_steps * 8;
      uint32_t a[2][4], b[2][kTiles][2];  // k-step ks's fragments in [ks % 2]
      const auto load = [&](int ks, auto buf) {
        const uint2 lo = *reinterpret_cast<const uint2*>(a_row + ks * 8);
        // rows 8..15 are zeros at B <= 8 (as at B8): not loaded, half of h's shared-memory reads
        const uint2 hi = upper_rows ? *reinterpret_cast<const uint2*>(a_row + 8 * ldh_words + ks * 8) : make_uint2(0u, 0u);
        a[buf][0] = lo.x, a[buf][2] = lo.y, a[buf][1] = hi.x, a[buf][3] = hi.y;
        const int kg = k_half * half_steps + ks;  // the k-step within the row
#pragma unroll
        for (int j = 0; j < kTiles; ++j) {
          const int n = (n_group + 8 * j) * 8 + g;  // local row
          if constexpr (kPlanes) {
            // values k = t and t + 4 of this k-step: pair kg * 4 + t; top 16 bits and bits 15..8
            const int unit = n * hpad / 2 + on_chip_pair_unit(n, kg * 4 + t);
            const uint32_t top = w_words[unit];
            const uint32_t low = reinterpret_cast<const uint16_t*>(w_lo8)[unit];
            b[buf][j][0] = __byte_perm(top, low, 0x1046);
            b[buf][j][1] = __byte_perm(top, low, 0x3256);
          } else {
            const uint2 v = *reinterpret_cast<const uint2*>(w_words + n * ldh_words + kg * 8 + 2 * t);
            b[buf][j][0] = v.x, b[buf][j][1] = v.y;
          }
        }
      };
      const auto multiply = [&](auto buf) {
        if constexpr (kOneTile) {
          mma_tile<Native>(acc[decltype(buf)::value], a[buf], b[buf][0]);
        } else {
#pragma unroll
          for (int j = 0; j < kTiles; ++j) mma_tile<Native>(acc[j], a[buf], b[buf][j]);
        }
      };
      pipelined_k_steps(half_steps, load, multiply);
      if constexpr (kOneTile)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[0][r] += acc[1][r];
    }
    trace_stamp(p.trace, s, 2);  // phase 2: thread 0's warp's half of the products
    if (k_half == 1) {
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        float* out = part_s + g * ldp + (n_group + 8 * j) * 8 + 2 * t;
        *reinterpret_cast<float2*>(out) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(out + 8 * ldp) = make_float2(acc[j][2], acc[j][3]);
      }
    }
    __syncthreads();  // both halves multiplied (one CTA: h_s free to be rewritten); the upper half's sums stored
    trace_stamp(p.trace, s, 3);  // phase 3: the first __syncthreads
    const bool publish = s + 1 < p.T;  // the last step's outputs multiply nothing
    if (k_half == 0) {
      // each output (acc + the upper half's sum, the epilogue) goes into this CTA's h_t (the units'
      // columns of rows < B; at the last step too, where the stores below read it back) and, fp32
      // (which h_s holds as TF32), replaces its sum in acc
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int b = g + 8 * (r / 2), ul = (n_group + 8 * j) * 8 + 2 * t + r % 2, u = u0 + ul;
          const float sum = acc[j][r] + part_s[b * ldp + ul];
          // finished sequence: output / gradient is zero from here on; units past H: zero in h_s
          const scalar_t y = static_cast<scalar_t>(
              b < live && u < p.H ? step_epilogue(z[j][r] + sum, hf[j][r], p.relu, p.backward) : 0.f);
          acc[j][r] = static_cast<float>(y);
          if (b < p.B) h_next[b * ldh + mma_k_position(u, kElem)] = mma_operand(y);
        }
      }
    }
    on_chip_send(h_next, ldh, u0, rows, p.B, ctas, rank, publish);
    // the outputs to seq[t] after the arrival, whose release would otherwise wait for them: 16-bit
    // read back from h_t (the same bits; acc need not live across the copy), fp32 from acc
    if (k_half == 0) {
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int b = g + 8 * (r / 2), u = u0 + (n_group + 8 * j) * 8 + 2 * t + r % 2;
          if (b >= p.B || u >= p.H) continue;
          if constexpr (kPlanes) cur[static_cast<int64_t>(b) * p.H + u] = acc[j][r];
          else cur[static_cast<int64_t>(b) * p.H + u] = h_next[b * ldh + mma_k_position(u, kElem)];
        }
      }
    }
    trace_stamp(p.trace, s, 4);  // phase 4: epilogue, h_t to every rank, the arrival (or __syncthreads), stores
  }
  // no CTA exits while a peer may still write into its shared memory (none does after the last
  // step's arrival: the last step publishes nothing; the wait pairs that arrival all the same)
  on_chip_wait(ctas);
}


// ---- the on-chip kernel with W_hh in registers (RNNKERN_RNN_ON_CHIP_W=registers; opt-in) --------
// The same cluster of H_pad / 64 CTAs, 64 rows of W each, and the same all-gather of h_t, with the
// operands swapped: W is the MMA's m16 A operand, held in registers for the whole sequence, and h
// the n8 B operand (batch rows: B <= 8 fills one n8 tile exactly, where h as the m16 operand leaves
// half of it zeros; B <= 8 only). 16 warps = the CTA's 4 m16 tiles x 4 quarters of k; a warp multiplies its 16
// rows over its quarter (at most 16 k-steps, 64 registers of W a lane: 16-bit H_pad <= 1024, fp32
// <= 512). A step then reads from shared memory only h, 4 x 8 x H elements a CTA, where the kernel
// above reads 8 x 8 x H of h and all of its W. The quarters' sums meet in
// part_s, added in quarter order (bitwise repeatable) by the first quarter's warps, which own the
// outputs.
// A 32-bit word of W's row u (this CTA's m tile) from column c: fp32 rounded to TF32; 16-bit the
// pair c, c + 1 (low half c), as a fragment register holds it. Zeros past H.
template <typename scalar_t>
__device__ __forceinline__ uint32_t wreg_word(const PersistentParams<scalar_t>& p, int u, int c) {
  const auto at = [&](int col) {
    return u < p.H && col < p.H ? mma_operand(p.weight[static_cast<int64_t>(u) * p.H + col]) : scalar_t(0);
  };
  if constexpr (sizeof(scalar_t) == 4) {
    return __float_as_uint(at(c));
  } else {
    return static_cast<uint32_t>(at(c).x) | static_cast<uint32_t>(at(c + 1).x) << 16;  // (.x: the bits)
  }
}

// B <= 8: one n8 tile of batch rows (a second tile's registers would spill at 128 a thread).
template <typename scalar_t>
__global__ void __launch_bounds__(kOnChipThreads, 1) rnn_on_chip_wreg_kernel(PersistentParams<scalar_t> p) {
  using Native = typename NativeOf<scalar_t>::type;
  constexpr bool kTf32 = std::is_same_v<scalar_t, float>;
  constexpr int kElem = sizeof(scalar_t);
  constexpr int rows = 64, kk = kTf32 ? 8 : 16;  // this CTA's rows of W; one mma.sync's k
  const int hpad = on_chip_hpad(p.H);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int ctas = static_cast<int>(gridDim.x), rank = static_cast<int>(blockIdx.x);
#else
  constexpr int ctas = 1, rank = 0;  // no clusters before sm_90 (the cluster code compiles away)
#endif
  const int k_steps = on_chip_wreg_steps(hpad, kElem);
  if (p.B > 8 || blockDim.x != kOnChipThreads || static_cast<int>(gridDim.x) != ctas ||
      hpad != ctas * rows || k_steps > kWregMaxSteps)
    __trap();  // (the host checks)
  on_chip_check_cluster(ctas, rank);
  const int u0 = rank * rows;            // this CTA's first unit
  const int ldh = mma_ldk(hpad, kElem);  // h_s's row stride (elements)
  const int ldh_words = ldh * kElem / 4;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  scalar_t* h_bufs = reinterpret_cast<scalar_t*>(smem_raw);
  const int buffers = on_chip_h_buffers(ctas);
  float* part_s = reinterpret_cast<float*>(h_bufs + buffers * 16 * ldh);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int m_tile = warp % 4, k_part = warp / 4;
  const int k_first = k_part * k_steps;  // the warp's first k-step in the row
  // W's A fragments, once: rows g and g + 8 of the m tile, words t and t + 4 of each k-step
  // (tf32: columns t, t + 4; 16-bit: pairs 2t and 2t + 8); zeros past the warp's k-steps
  uint32_t wa[kWregMaxSteps][4];
  {
    const int u = u0 + m_tile * 16 + g, per_word = 4 / kElem;
    // no branch (past the warp's k-steps, a column past H, which wreg_word reads as zero), so the
    // loads go out together
#pragma unroll
    for (int ks = 0; ks < kWregMaxSteps; ++ks) {
      const int c0 = ks < k_steps ? (k_first + ks) * kk + t * per_word : p.H, c1 = c0 + 4 * per_word;
      wa[ks][0] = wreg_word(p, u, c0);
      wa[ks][1] = wreg_word(p, u + 8, c0);
      wa[ks][2] = wreg_word(p, u, c1);
      wa[ks][3] = wreg_word(p, u + 8, c1);
    }
  }
  on_chip_stage_h0(p, h_bufs, buffers, ldh, ctas);

  const int64_t step = static_cast<int64_t>(p.B) * p.H;
  for (int s = 0; s < p.T; ++s) {
    trace_stamp(p.trace, s, 0);
    const int t_idx = p.backward ? p.T - 1 - s : s;
    scalar_t* cur = p.seq + t_idx * step;
    const int live = p.live ? p.live[t_idx] : p.B;
    const scalar_t* h_s = on_chip_h(h_bufs, s, buffers, ldh);    // h_{t-1}
    scalar_t* h_next = on_chip_h(h_bufs, s + 1, buffers, ldh);   // h_t, in every rank
    // The first quarter's outputs: (unit u0 + m_tile * 16 + g (+ 8), batch row 2t (+ 1)), accumulator
    // r. Their pre-activations (and forward outputs, backward) do not depend on the recurrence: load now.
    float z[4], hf[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int u = u0 + m_tile * 16 + g + 8 * (r / 2), b = 2 * t + r % 2;
      z[r] = hf[r] = 0.f;
      if (k_part == 0 && b < live && u < p.H) {
        const int64_t o = static_cast<int64_t>(b) * p.H + u;
        z[r] = static_cast<float>(cur[o]);  // written only below, by this thread
        if (p.backward) hf[r] = static_cast<float>(p.act_out[t_idx * step + o]);
      }
    }
    if (s > 0) on_chip_wait(ctas);  // step s - 1's h_t in every rank's h_s
    trace_stamp(p.trace, s, 1);    // phase 1: the loads above issued, the cluster's wait
    // acc[0] takes the even k-steps, acc[1] the odd ones (two independent MMA chains)
    float acc[2][4] = {};
    if (live > 0) {
      // this lane's words t and t + 4 of h's row g, adjacent in mma_k_position's order: one 8-byte
      // load a k-step, the next one's before this one's MMA (fully unrolled: wa's registers are
      // indexed by constants)
      const uint32_t* b_row = reinterpret_cast<const uint32_t*>(h_s) + g * ldh_words + 2 * t + k_first * 8;
      uint2 next = *reinterpret_cast<const uint2*>(b_row);
#pragma unroll
      for (int ks = 0; ks < kWregMaxSteps; ++ks) {
        if (ks >= k_steps) break;  // warp-uniform
        const uint32_t b[2] = {next.x, next.y};
        if (ks + 1 < k_steps) next = *reinterpret_cast<const uint2*>(b_row + (ks + 1) * 8);
        mma_tile<Native>(acc[ks % 2], wa[ks], b);
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[0][r] += acc[1][r];
    }
    trace_stamp(p.trace, s, 2);  // phase 2: thread 0's warp's quarter of the products
    if (k_part > 0) {  // accumulators (g, 2t..2t+1) and (g + 8, 2t..2t+1): units x batch rows
      float* out = part_s + ((k_part - 1) * rows + m_tile * 16 + g) * kWregLdp + 2 * t;
      *reinterpret_cast<float2*>(out) = make_float2(acc[0][0], acc[0][1]);
      *reinterpret_cast<float2*>(out + 8 * kWregLdp) = make_float2(acc[0][2], acc[0][3]);
    }
    __syncthreads();  // every quarter multiplied (one CTA: h_s free to be rewritten); the sums stored
    trace_stamp(p.trace, s, 3);  // phase 3: the first __syncthreads
    const bool publish = s + 1 < p.T;  // the last step's outputs multiply nothing
    if (k_part == 0) {
      // each output (the quarters' sums in order, the epilogue) goes into this CTA's h_t (at the last
      // step too, where the stores below read it back) and, fp32 (which h_s holds as TF32), into acc
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // units g, g + 8; accumulators r = 2 half, 2 half + 1
        const int ul = m_tile * 16 + g + 8 * half, u = u0 + ul, b0 = 2 * t;
        float sum[2] = {acc[0][2 * half], acc[0][2 * half + 1]};
#pragma unroll
        for (int q = 0; q < 3; ++q) {  // batch rows b0, b0 + 1 side by side: one 8-byte read
          const float2 v = *reinterpret_cast<const float2*>(part_s + (q * rows + ul) * kWregLdp + b0);
          sum[0] += v.x, sum[1] += v.y;
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int r = 2 * half + e, b = b0 + e;
          // finished sequence: output / gradient is zero from here on; units past H: zero in h_s
          const scalar_t y = static_cast<scalar_t>(
              b < live && u < p.H ? step_epilogue(z[r] + sum[e], hf[r], p.relu, p.backward) : 0.f);
          acc[0][r] = static_cast<float>(y);
          if (b < p.B) h_next[b * ldh + mma_k_position(u, kElem)] = mma_operand(y);
        }
      }
    }
    on_chip_send(h_next, ldh, u0, rows, p.B, ctas, rank, publish);
    // the outputs to seq[t] after the arrival, whose release would otherwise wait for them: 16-bit
    // read back from h_t (the same bits), fp32 from acc
    if (k_part == 0) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int u = u0 + m_tile * 16 + g + 8 * (r / 2), b = 2 * t + r % 2;
        if (b >= p.B || u >= p.H) continue;
        if constexpr (kTf32) cur[static_cast<int64_t>(b) * p.H + u] = acc[0][r];
        else cur[static_cast<int64_t>(b) * p.H + u] = h_next[b * ldh + mma_k_position(u, kElem)];
      }
    }
    trace_stamp(p.trace, s, 4);  // phase 4: epilogue, h_t to every rank, the arrival (or __syncthreads), stores
  }
  on_chip_wait(ctas);  // (as the kernel above)
}
#endif

// The tensor-core kernel's partition: `clusters` clusters of kMmaClusterCtas CTAs.
struct MmaConfig {
  bool use = false;
  int clusters = 0, units = 0, kslice = 0;
  size_t smem = 0;
  const char* why = "";  // what it runs in ("tf32", ...) or why it does not run
  // several clusters exchanging step-tagged words (mma_exchange_wanted), read once with
  // the shared memory it sizes (two partial-sum buffers) so the launch cannot disagree with it
  bool exchange = false;
};

// The on-chip kernel (rnn_on_chip_kernel): one cluster of `ctas` CTAs (1: a plain launch).
struct OnChipConfig {
  bool use = false;
  int ctas = 0;
  size_t smem = 0;
  const char* why = "";   // why it does not run
  bool registers = false;  // W_hh in registers (rnn_on_chip_wreg_kernel), RNNKERN_RNN_ON_CHIP_W=registers
};

// `use`: the FMA kernel (rnn_persistent_kernel) fits; `mma.use`: the tensor-core kernel is tried
// first. Neither: the general path.
struct PersistentConfig {
  bool use = false;
  int grid = 0, rows = 0;
  size_t smem = 0;
  StepBarrier barrier = StepBarrier::kGrid;
  int batch_tile = 1;  // sequences per warp at a time (rnn_persistent_kernel's kBatchTile)
  const char* why = "";
  MmaConfig mma;
  OnChipConfig on_chip;  // tried first where RNNKERN_RNN_PATH=cta asks and it fits
};

const char* barrier_name(StepBarrier b) {
  switch (b) {
    case StepBarrier::kCluster: return "cluster";
    case StepBarrier::kFlag: return "flag";
    case StepBarrier::kExchange: return "exchange";
    default: return "grid";
  }
}

// grid.sync over every SM by default. One cluster (RNNKERN_RNN_BARRIER=cluster, where the
// device has clusters and W_hh's rows fit kMaxRows on each of kMaxClusterCtas CTAs) waits less
// per step but gives each CTA 8x the rows: on an H200 at B8 H256 it runs 6.7-7.0 us a step
// against grid's 3.5 (bench/NOTES.md). RNNKERN_RNN_BARRIER=flag forces the flag barrier,
// RNNKERN_RNN_BARRIER=exchange no barrier (the step-tagged exchange words; opt-in for the FMA kernel:
// on two H200 runs it ran 0.96-1.12x grid.sync's speed at fp32 B8 H256 and 0.69-0.94x at fp32
// B8 H1024 and bf16 B8 H512).
bool exchange_requested() { return env_equals("RNNKERN_RNN_BARRIER", "exchange"); }

// The tensor-core kernel across clusters exchanges h through step-tagged words instead of the flag
// barrier unless RNNKERN_RNN_BARRIER names another barrier: on an H200 (bench/results/
// h200-20261127-s18.json) it ran 1.04-1.16x faster at fp32 (TF32) B8 H512, B64 H1024 and bf16 B8 /
// B64 H1024, forward and forward + backward, with the flag barrier's bits (tested).
bool mma_exchange_wanted() {
  const char* e = std::getenv("RNNKERN_RNN_BARRIER");
  return e == nullptr || *e == '\0' || std::strcmp(e, "exchange") == 0;
}

StepBarrier choose_barrier(int64_t H, const cudaDeviceProp& prop) {
  if (env_equals("RNNKERN_RNN_BARRIER", "flag")) return StepBarrier::kFlag;
  if (exchange_requested()) return StepBarrier::kExchange;
  const bool cluster_fits = prop.major >= 9 && H <= int64_t{kMaxClusterCtas} * kMaxRows;
  if (env_equals("RNNKERN_RNN_BARRIER", "cluster") && cluster_fits) return StepBarrier::kCluster;
  return StepBarrier::kGrid;
}

// W_hh over at most `most` clusters: `units` rows each (a multiple of 16), and each CTA of a
// cluster 1/8 of the columns rounded up to the fragment's k.
MmaConfig mma_partition(at::ScalarType dtype, int64_t B, int64_t H, int64_t most, const cudaDeviceProp& prop) {
  MmaConfig m;
  const int elem = dtype == at::kFloat ? 4 : 2, fk = dtype == at::kFloat ? 8 : 16;  // one mma.sync k-step: 8 words
  const int64_t per_rank = (H + kMmaClusterCtas - 1) / kMmaClusterCtas;
  const int kslice = static_cast<int>((per_rank + fk - 1) / fk * fk);
  const int units = round_up16(static_cast<int>((H + most - 1) / most));
  const int clusters = static_cast<int>((H + units - 1) / units);
  const int b16 = round_up16(static_cast<int>(B));
  // the partial sums: two buffers with the exchange across clusters (rnn_persistent_mma_kernel);
  // where the second does not fit, the default steps back to the flag barrier (one buffer)
  const auto smem_for = [&](int buffers) {
    return static_cast<size_t>(units + b16) * mma_ldk(kslice, elem) * elem +
           static_cast<size_t>(buffers) * b16 * mma_ldu(units) * sizeof(float);
  };
  int part_buffers = clusters > 1 && mma_exchange_wanted() ? 2 : 1;
  if (part_buffers == 2 && !exchange_requested() && smem_for(2) > prop.sharedMemPerBlockOptin) part_buffers = 1;
  const size_t smem = smem_for(part_buffers);
  if (smem > prop.sharedMemPerBlockOptin) {
    m.why = part_buffers == 2 ? "W_hh slice and two steps' partial sums exceed shared memory"
                              : "W_hh slice exceeds shared memory";
  } else {
    m = {true, clusters, units, kslice, smem, "", part_buffers == 2};
  }
  return m;
}

// Tensor cores where the dtype and torch's flags allow them (fp32 only as tf32, and only when
// torch.backends.cudnn.allow_tf32 lets cuDNN's RNN do the same) and the batch fills a 16-row
// tile; RNNKERN_RNN_MATH=fma|mma overrides the batch rule, never the precision rule.
MmaConfig choose_mma(at::ScalarType dtype, int64_t B, int64_t H, const cudaDeviceProp& prop) {
  MmaConfig m;
  const bool force_fma = env_equals("RNNKERN_RNN_MATH", "fma");
  const bool force_mma = env_equals("RNNKERN_RNN_MATH", "mma");
  const bool tf32 = dtype == at::kFloat && cudnn_tf32_allowed(CudnnOp::kRnn);
  if (force_fma) {
    m.why = "RNNKERN_RNN_MATH=fma";
  } else if (dtype == at::kFloat && !tf32) {
    m.why = "fp32 with TF32 off";
  } else if (prop.major < 9) {
    m.why = "needs sm_90 clusters";
  } else if (!force_mma && B < (H >= kMmaLargeH ? kMmaMinBatchLargeH : kMmaMinBatch)) {
    m.why = H >= kMmaLargeH ? "batch < 8" : "batch < 16 at H < 512";
  } else {
    // one cluster for small H (no grid barrier); else as many as the SMs hold, which the flag
    // barrier across clusters needs co-resident (a cooperative launch)
    const int64_t most = H <= kMmaOneClusterMaxH || !prop.cooperativeLaunch
                             ? 1 : std::max(1, prop.multiProcessorCount / kMmaClusterCtas);
    m = mma_partition(dtype, B, H, most, prop);
    if (m.use) m.why = tf32 ? "tf32" : dtype == at::kHalf ? "fp16" : "bf16";
  }
  return m;
}

// The on-chip kernel (RNNKERN_RNN_PATH=cta): tensor cores (fp32 only as TF32, as above), B <= 16,
// and W_hh's rows over at most 16 CTAs of 64-256 rows each. By default one CTA per 64 rows (the
// fewest rows and least shared memory a CTA; sm_80: one CTA, H <= 256); RNNKERN_RNN_CLUSTER=n asks
// for n CTAs (a divisor of H_pad / 64 with at most 256 rows each).
OnChipConfig choose_on_chip(at::ScalarType dtype, int64_t B, int64_t H, const cudaDeviceProp& prop) {
  OnChipConfig c;
  const int elem = dtype == at::kFloat ? 4 : 2;
  const int64_t slabs = (H + 63) / 64;  // 64-row slabs of the padded H
  const bool clusters = prop.major >= 9;
  const int asked = env_positive_int("RNNKERN_RNN_CLUSTER", 0);
  const int64_t ctas = asked > 0 ? asked : clusters ? slabs : 1;
  if (env_equals("RNNKERN_RNN_MATH", "fma")) {
    c.why = "RNNKERN_RNN_MATH=fma";
  } else if (dtype == at::kFloat && !cudnn_tf32_allowed(CudnnOp::kRnn)) {
    c.why = "fp32 with TF32 off";
  } else if (prop.major < 8) {
    c.why = "needs sm_80 tensor cores";
  } else if (B > kOnChipMaxBatch) {
    c.why = "batch > 16";
  } else if (slabs > int64_t{kOnChipMaxCtas}) {
    c.why = "H > 1024";
  } else if (!clusters && asked == 0 && slabs > kOnChipMaxTilesPerWarp) {
    c.why = "H > 256 needs sm_90 clusters";
  } else if (ctas > 1 && !clusters) {
    c.why = "RNNKERN_RNN_CLUSTER > 1 needs sm_90 clusters";
  } else if (ctas > kOnChipMaxCtas || slabs % ctas != 0 || slabs / ctas > kOnChipMaxTilesPerWarp ||
             (ctas > 1 && slabs / ctas == kOnChipMaxTilesPerWarp)) {
    // (256 rows a CTA run as one CTA only: twice that never fits an SM's shared memory)
    c.why = "RNNKERN_RNN_CLUSTER does not split H_pad into 64-256 rows a CTA (256: one CTA)";
  } else if (env_equals("RNNKERN_RNN_ON_CHIP_W", "registers")) {
    // 64 rows a CTA, a quarter of k a warp in at most kWregMaxSteps k-steps
    const int hpad = static_cast<int>(slabs * 64);
    const size_t smem = on_chip_wreg_smem(hpad, static_cast<int>(ctas), elem);
    if (B > 8)
      c.why = "W_hh in registers holds batch <= 8";
    else if (slabs != ctas && !clusters)
      c.why = "W_hh in registers above H 64 needs sm_90 clusters";
    else if (slabs != ctas || on_chip_wreg_steps(hpad, elem) > kWregMaxSteps)
      c.why = "W_hh in registers needs 64 rows a CTA and H <= 512 (fp32) / 1024 (16-bit)";
    else if (smem > prop.sharedMemPerBlockOptin) c.why = "h exceeds shared memory";
    else c = {true, static_cast<int>(ctas), smem, "", true};
  } else {
    const size_t smem = on_chip_smem(static_cast<int>(slabs * 64), static_cast<int>(ctas), elem);
    if (smem > prop.sharedMemPerBlockOptin) c.why = "W_hh and h exceed shared memory";
    else c = {true, static_cast<int>(ctas), smem, ""};
  }
  return c;
}

// The RNN's RNNKERN_RNN_* overrides (read per call with env_equals) hold known values.
void check_rnn_env() {
  // (avx512 forces the CPU's step: accepted here, so that setting it for CPU calls breaks no CUDA call)
  check_env_choice("RNNKERN_RNN_PATH", {"general", "persistent", "cta", "avx512"});
  check_env_choice("RNNKERN_RNN_MATH", {"fma", "mma"});
  check_env_choice("RNNKERN_RNN_ON_CHIP_W", {"shared", "registers"});
  check_env_choice("RNNKERN_RNN_BARRIER", {"grid", "flag", "cluster", "exchange"});
  check_env_choice("RNNKERN_RNN_GRAPH", {"0", "1"});
  check_env_choice("RNNKERN_RNN_TRACE", {"0", "1"});
}

// The one place that decides between the persistent kernels and the general path, from the
// problem size and the device's SM count, shared memory and co-residency limits.
PersistentConfig choose_rnn_path(const at::Tensor& x, int64_t B, int64_t H) {
  check_rnn_env();
  PersistentConfig cfg;
  const auto dtype = x.scalar_type();
  if (env_equals("RNNKERN_RNN_PATH", "general")) {
    cfg.why = "RNNKERN_RNN_PATH=general";
  } else if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    cfg.why = "dtype";
  } else if (B < 1 || B > kMmaMaxBatch) {
    cfg.why = "batch outside [1, 256]";
  } else if (B > kMaxBatch && !env_equals("RNNKERN_RNN_MATH", "mma")) {
    cfg.why = "batch outside [1, 64]";
  } else if (H < 1) {
    cfg.why = "H = 0";  // rows would be 0 below (a division by zero on the host)
  } else {
    const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
    const StepBarrier barrier = choose_barrier(H, *prop);
    // rows spread over every SM for a grid barrier, over at most one cluster otherwise;
    // RNNKERN_RNN_CTAS=n caps the grid and flag launches at n CTAs (more rows each, fewer arrivals
    // a barrier), to measure that trade
    const int ctas = barrier == StepBarrier::kCluster
                         ? kMaxClusterCtas
                         : std::min(prop->multiProcessorCount, env_positive_int("RNNKERN_RNN_CTAS", prop->multiProcessorCount));
    const int rows = static_cast<int>((H + ctas - 1) / ctas);
    const int grid = static_cast<int>((H + rows - 1) / rows);
    // W's rows; one cluster also keeps two copies of the previous step's B x H output (the kernel's h_s)
    const size_t smem = (static_cast<size_t>(rows) * H + (barrier == StepBarrier::kCluster ? 2 * B * H : 0)) *
                        x.element_size();
    if (B > kMaxBatch) {
      cfg.why = "batch outside [1, 64] for the FMA kernel";
    } else if (!prop->cooperativeLaunch && barrier != StepBarrier::kCluster) {
      cfg.why = "no cooperative launch";
    } else if (rows > kMaxRows) {
      cfg.why = "H too large for the grid";
    } else if (smem > prop->sharedMemPerBlockOptin) {
      cfg.why = barrier == StepBarrier::kCluster ? "W_hh slice and two B x H steps exceed shared memory"
                                                 : "W_hh slice exceeds shared memory";
    } else {
      // the widest batch tile that still gives each of the 8 warps a tile and keeps rows x tile
      // accumulators within rows_for_tile's budget
      const int64_t warps = kPersistThreads / 32;
      int tile = 8;
      while (tile > 1 && ((B + warps - 1) / warps < tile || rows * tile > 64)) tile /= 2;
      cfg = {true, grid, rows, smem, barrier, tile, "fits"};
    }
    cfg.mma = choose_mma(dtype, B, H, *prop);
    if (env_equals("RNNKERN_RNN_PATH", "cta")) cfg.on_chip = choose_on_chip(dtype, B, H, *prop);
  }
  if (!debug_log_enabled()) return cfg;
  if (cfg.on_chip.use)
    std::fprintf(stderr, "rnnkern: rnn B=%lld H=%lld %s -> on-chip kernel: fits (%d CTA(s), %d rows each%s)\n",
                 static_cast<long long>(B), static_cast<long long>(H), c10::toString(dtype), cfg.on_chip.ctas,
                 on_chip_hpad(static_cast<int>(H)) / cfg.on_chip.ctas, cfg.on_chip.registers ? ", W in registers" : "");
  else if (cfg.on_chip.why[0])
    std::fprintf(stderr, "rnnkern: rnn B=%lld H=%lld %s -> on-chip kernel: %s\n", static_cast<long long>(B),
                 static_cast<long long>(H), c10::toString(dtype), cfg.on_chip.why);
  if (cfg.mma.use)
    std::fprintf(stderr,
                 "rnnkern: rnn B=%lld H=%lld %s -> persistent path (fits, tensor cores %s, %d cluster(s) of %d CTAs, "
                 "%d units x %d k per CTA, barrier %s)\n",
                 static_cast<long long>(B), static_cast<long long>(H), c10::toString(dtype), cfg.mma.why,
                 cfg.mma.clusters, kMmaClusterCtas, cfg.mma.units, cfg.mma.kslice,
                 barrier_name(cfg.mma.clusters == 1 ? StepBarrier::kCluster
                              : cfg.mma.exchange   ? StepBarrier::kExchange
                                                   : StepBarrier::kFlag));
  else
    std::fprintf(stderr, "rnnkern: rnn B=%lld H=%lld %s -> %s path (%s%s%s, batch tile %d) [tensor cores: %s]\n",
                 static_cast<long long>(B), static_cast<long long>(H), c10::toString(dtype),
                 cfg.use ? "persistent" : "general", cfg.why, cfg.use ? ", barrier " : "",
                 cfg.use ? barrier_name(cfg.barrier) : "", cfg.batch_tile, cfg.mma.why[0] ? cfg.mma.why : "no");
  return cfg;
}

// ---- host: the runtime queries before a launch (cached_query: kernel_queries.cuh) -----------
// The PTX version the kernel was built from on this device (< 90: no sm_90 code, so no clusters).
template <typename Kernel>
int ptx_version(Kernel kernel) {
  return cached_query({QueryKind::kPtxVersion, kernel_id(kernel)}, [&] {
    cudaFuncAttributes attr;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    return attr.ptxVersion;
  });
}

// The last traced launch (RNNKERN_RNN_TRACE=1): its stamps, on the GPU, and which kernel made them
// (set once it has launched). A diagnostic: one thread at a time.
struct StepTrace {
  at::Tensor stamps;  // (2, kTraceSteps, kTraceSlots) int64: the first CTA, the last CTA
  std::string kernel;
};
StepTrace& last_step_trace() {
  static StepTrace trace;
  return trace;
}

bool step_trace_requested() { return env_equals("RNNKERN_RNN_TRACE", "1"); }

// Each traced call starts with no trace: one that takes the general path leaves none.
void clear_step_trace() {
  if (step_trace_requested()) last_step_trace() = StepTrace{};
}

// A zeroed stamp buffer for the next launch when RNNKERN_RNN_TRACE=1 (read per call), else nullptr.
long long* arm_step_trace() {
  if (!step_trace_requested()) return nullptr;
  StepTrace& t = last_step_trace();
  t.stamps = at::zeros({2, kTraceSteps, kTraceSlots},
                       at::TensorOptions().dtype(at::kLong).device(at::kCUDA, at::cuda::current_device()));
  t.kernel.clear();
  return reinterpret_cast<long long*>(t.stamps.data_ptr<int64_t>());
}

// Names the kernel a traced launch ran.
void traced(const long long* trace, const std::string& kernel, int grid) {
  if (trace != nullptr) last_step_trace().kernel = kernel + ", " + std::to_string(grid) + " CTAs";
}

// Logged so tests can tell a silent fallback from a persistent run.
bool fall_back(const char* why, int grid, const char* kernel = "persistent", const char* to = "general path") {
  if (debug_log_enabled())
    std::fprintf(stderr, "rnnkern: rnn %s grid of %d CTAs %s -> %s\n", kernel, grid, why, to);
  return false;
}

// A launch's result: true when it went out; false (logged) when its configuration was refused, so
// the caller falls back; any other error is raised.
bool launch_went_out(cudaError_t err, int grid, const char* kernel = "persistent", const char* to = "general path") {
  if (err == cudaSuccess) return true;
  clear_refusal(err);
  return fall_back(cudaGetErrorString(err), grid, kernel, to);
}

// The exchange's two (B, H) buffers of ExchangeWord<scalar_t>, zeroed (tag 0 is no step's) on the
// current stream; the caller keeps the tensor until after the launch (freed stream-ordered).
template <typename scalar_t>
at::Tensor exchange_buffer(int B, int H) {
  constexpr bool wide = sizeof(typename ExchangeWord<scalar_t>::type) == 8;
  return at::zeros({2 * int64_t{B} * H},
                   at::TensorOptions().dtype(wide ? at::kLong : at::kInt).device(at::kCUDA, at::cuda::current_device()));
}

// The flag barrier's arrival counter, zeroed on the current stream, into *ptr. The caller keeps the
// returned tensor until after the launch; it is then freed stream-ordered, so no later work on
// the stream reuses it early.
at::Tensor arrival_counter(unsigned int** ptr) {
  at::Tensor arrivals =
      at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, at::cuda::current_device()));
  *ptr = reinterpret_cast<unsigned int*>(arrivals.data_ptr<int>());
  return arrivals;
}

// Cooperative launch (grid.sync and the flag barrier both need every CTA co-resident); returns
// false (nothing launched) if the grid cannot be, so the caller falls back to the general path.
template <typename scalar_t, StepBarrier kBarrier, int kBatchTile>
bool launch_cooperative(const PersistentConfig& cfg, PersistentParams<scalar_t> params) {
  auto kernel = rnn_persistent_kernel<scalar_t, kBarrier, kBatchTile>;
  allow_full_shared_memory(kernel);
  const int per_sm = blocks_per_sm(kernel, kPersistThreads, cfg.smem);
  if (per_sm * at::cuda::getCurrentDeviceProperties()->multiProcessorCount < cfg.grid)
    return fall_back("not co-resident", cfg.grid);
  at::Tensor arrivals, exchange;
  if constexpr (kBarrier == StepBarrier::kFlag) {
    if (int64_t{params.T} * cfg.grid >= (int64_t{1} << 32))  // the arrival count would wrap
      return launch_cooperative<scalar_t, StepBarrier::kGrid, kBatchTile>(cfg, params);
    arrivals = arrival_counter(&params.arrivals);
  }
  if constexpr (kBarrier == StepBarrier::kExchange) {
    exchange = exchange_buffer<scalar_t>(params.B, params.H);  // freed stream-ordered, like `arrivals`
    params.exchange = exchange.data_ptr();
  }
  void* args[] = {&params};
  // (refused, e.g. when fewer SMs are usable than the device reports: the general path)
  if (!launch_went_out(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), cfg.grid, kPersistThreads, args,
                                                   cfg.smem, at::cuda::getCurrentCUDAStream()),
                       cfg.grid))
    return false;
  traced(params.trace, std::string("FMA kernel, ") + barrier_name(kBarrier) + ", batch tile " + std::to_string(kBatchTile),
         cfg.grid);
  return true;  // `arrivals` is freed stream-ordered: no later work on this stream reuses it early
}

// One thread-block cluster of cfg.grid CTAs; false when this build has no sm_90 code for the
// kernel or the cluster cannot be resident.
template <typename scalar_t, int kBatchTile>
bool launch_cluster(const PersistentConfig& cfg, const PersistentParams<scalar_t>& params) {
  auto kernel = rnn_persistent_kernel<scalar_t, StepBarrier::kCluster, kBatchTile>;
  if (ptx_version(kernel) < 90) return fall_back("has no sm_90 code in this build for a cluster", cfg.grid);
  allow_full_shared_memory(kernel);
  if (cfg.grid > 8) {  // like the shared-memory cap: set once, kept, and before the probe that needs it
    const int allowed = cached_query({QueryKind::kNonPortableClusters, kernel_id(kernel)}, [&] {
      return refused_as_zero(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1), 1);
    });
    if (!allowed) return fall_back("is refused clusters of more than 8 CTAs", cfg.grid);
  }
  ClusterLaunch launch(cfg.grid, cfg.grid, cfg.smem, kPersistThreads);
  const int clusters = cached_query({QueryKind::kResidentClusters, kernel_id(kernel), kPersistThreads,
                                     cfg.grid, cfg.grid, cfg.smem},
                                    [&] {
                                      int n = 0;
                                      const cudaError_t err = cudaOccupancyMaxActiveClusters(&n, kernel, &launch.config);
                                      return refused_as_zero(err, n);
                                    });
  if (clusters < 1) return fall_back("cannot be one resident cluster", cfg.grid);
  if (!launch_went_out(cudaLaunchKernelEx(&launch.config, kernel, params), cfg.grid)) return false;
  traced(params.trace, std::string("FMA kernel, ") + barrier_name(StepBarrier::kCluster) + ", batch tile " +
                           std::to_string(kBatchTile),
         cfg.grid);
  return true;
}

// The tensor-core kernel; false (nothing launched, logged with where the caller goes `to`) when
// it cannot run here.
template <typename scalar_t>
bool launch_mma(MmaConfig m, const PersistentParams<scalar_t>& base, const char* to) {
  auto one_cluster = rnn_persistent_mma_kernel<scalar_t, true>;
  auto clusters = rnn_persistent_mma_kernel<scalar_t, false>;
  auto clusters_exchange = rnn_persistent_mma_kernel<scalar_t, false, true>;  // the exchange (default)
  const char* name = "tensor-core";
  if (ptx_version(clusters) < 90) return fall_back("has no sm_90 code in this build", m.clusters * kMmaClusterCtas, name, to);
  allow_full_shared_memory(one_cluster);
  allow_full_shared_memory(clusters);
  allow_full_shared_memory(clusters_exchange);
  // co-resident clusters for c, probed with the multi-cluster variant that c launches (the exchange
  // kernel or the flag barrier's; the one-cluster one differs from the latter in registers only, and
  // shared memory holds either to one CTA per SM); 0 if the shape is refused
  const auto resident_clusters = [&](const MmaConfig& c) {
    const int grid = c.clusters * kMmaClusterCtas;
    const auto probed = c.exchange ? clusters_exchange : clusters;
    return cached_query({QueryKind::kResidentClusters, kernel_id(probed), kPersistThreads, grid,
                         kMmaClusterCtas, c.smem},
                        [&] {
                          int n = 0;
                          ClusterLaunch probe(grid, kMmaClusterCtas, c.smem, kPersistThreads);
                          const cudaError_t err = cudaOccupancyMaxActiveClusters(&n, probed, &probe.config);
                          return refused_as_zero(err, n);
                        });
  };
  int resident = resident_clusters(m);
  if (m.clusters > 1 && resident >= 1 && resident < m.clusters) {
    // the GPCs hold fewer 8-CTA clusters than SMs / 8: wider clusters, fewer of them (more shared memory each)
    m = mma_partition(c10::CppTypeToScalarType<scalar_t>::value, base.B, base.H, resident,
                      *at::cuda::getCurrentDeviceProperties());
    if (!m.use) return fall_back(m.why, resident * kMmaClusterCtas, name, to);
    if (debug_log_enabled())
      std::fprintf(stderr, "rnnkern: rnn tensor-core kernel: %d resident clusters -> %d cluster(s) of %d units\n",
                   resident, m.clusters, m.units);
    resident = resident_clusters(m);
  }
  const int grid = m.clusters * kMmaClusterCtas;
  if (resident < m.clusters) return fall_back("cannot be co-resident", grid, name, to);
  ClusterLaunch launch(grid, kMmaClusterCtas, m.smem, kPersistThreads);
  MmaParams<scalar_t> params;
  static_cast<PersistentParams<scalar_t>&>(params) = base;
  params.units = m.units;
  params.kslice = m.kslice;
  at::Tensor arrivals, exchange;
  // across clusters: step-tagged exchange words (the default: mma_exchange_wanted), or the flag barrier
  const bool exchanged = m.exchange;
  if (exchanged) {
    exchange = exchange_buffer<scalar_t>(params.B, params.H);
    params.exchange = exchange.data_ptr();
    launch.cooperative();  // readers spin on other clusters' words: all of them resident
  } else if (m.clusters > 1) {
    if (int64_t{params.T} * grid >= (int64_t{1} << 32)) return fall_back("would wrap its arrival count", grid, name, to);
    arrivals = arrival_counter(&params.arrivals);
    launch.cooperative();  // the flag barrier across clusters needs them all resident
  }
  // (refused e.g. by a driver that refuses cooperative + cluster together: the caller falls back)
  if (!launch_went_out(cudaLaunchKernelEx(&launch.config,
                                          exchanged ? clusters_exchange : m.clusters > 1 ? clusters : one_cluster, params),
                       grid, name, to))
    return false;
  traced(params.trace,
         std::string("tensor-core kernel, ") +
             barrier_name(exchanged ? StepBarrier::kExchange : m.clusters > 1 ? StepBarrier::kFlag : StepBarrier::kCluster),
         grid);
  return true;  // `arrivals` is freed stream-ordered, as in launch_cooperative
}

template <typename scalar_t, int kBatchTile>
bool launch_with_tile(const PersistentConfig& cfg, const PersistentParams<scalar_t>& params) {
  switch (cfg.barrier) {
    case StepBarrier::kCluster:
      return launch_cluster<scalar_t, kBatchTile>(cfg, params);
    case StepBarrier::kFlag:
      return launch_cooperative<scalar_t, StepBarrier::kFlag, kBatchTile>(cfg, params);
    case StepBarrier::kExchange:
      return launch_cooperative<scalar_t, StepBarrier::kExchange, kBatchTile>(cfg, params);
    default:
      return launch_cooperative<scalar_t, StepBarrier::kGrid, kBatchTile>(cfg, params);
  }
}

// The on-chip kernel: one CTA, or one cluster of c.ctas; false (nothing launched, logged) when refused.
template <typename scalar_t>
bool launch_on_chip(const OnChipConfig& c, const PersistentParams<scalar_t>& params) {
  using Kernel = void (*)(PersistentParams<scalar_t>);
  const Kernel kernels[] = {rnn_on_chip_kernel<scalar_t, 1>, rnn_on_chip_kernel<scalar_t, 2>,
                            rnn_on_chip_kernel<scalar_t, 3>, rnn_on_chip_kernel<scalar_t, 4>};
  const Kernel kernel = c.registers ? rnn_on_chip_wreg_kernel<scalar_t>
                                    : kernels[on_chip_hpad(params.H) / c.ctas / 64 - 1];  // kTiles: the CTA's rows / 64
  const char* name = c.ctas > 1 ? "on-chip cluster" : "on-chip";
  // a cluster refused here: one CTA where it holds W_hh in shared memory (H <= 256), else the other
  // kernels (W in registers too: a refusal there says the cluster form cannot run, and the bench
  // measuring it should see the other kernels' time under that label only with the log's word)
  const int hpad = on_chip_hpad(params.H);
  const OnChipConfig alone{true, 1, on_chip_smem(hpad, 1, sizeof(scalar_t)), ""};
  const bool retry = c.ctas > 1 && !c.registers && hpad <= 64 * kOnChipMaxTilesPerWarp &&
                     alone.smem <= at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  const char* to = retry ? "one CTA" : "the other kernels";
  const auto refused = [&](const char* why) {
    fall_back(why, c.ctas, name, to);
    return retry && launch_on_chip(alone, params);
  };
  if (static_cast<size_t>(allow_full_shared_memory(kernel)) < c.smem)
    return refused("needs more shared memory than the kernel may have");
  // cudaLaunchKernelEx returns this launch's own error (cudaGetLastError could return an earlier one)
  ClusterLaunch launch(c.ctas, c.ctas, c.smem, kOnChipThreads);
  if (c.ctas == 1) {
    launch.config.numAttrs = 0;  // a plain launch (sm_80 too)
  } else {
    if (ptx_version(kernel) < 90) return refused("has no sm_90 code in this build for a cluster");
    if (c.ctas > 8) {  // set once, kept, and before the probe that needs it (as launch_cluster)
      const int allowed = cached_query({QueryKind::kNonPortableClusters, kernel_id(kernel)}, [&] {
        return refused_as_zero(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1), 1);
      });
      if (!allowed) return refused("is refused clusters of more than 8 CTAs");
    }
    const int resident = cached_query({QueryKind::kResidentClusters, kernel_id(kernel), kOnChipThreads, c.ctas,
                                       c.ctas, c.smem},
                                      [&] {
                                        int n = 0;
                                        const cudaError_t err = cudaOccupancyMaxActiveClusters(&n, kernel, &launch.config);
                                        return refused_as_zero(err, n);
                                      });
    if (resident < 1) return refused("cannot be one resident cluster");
  }
  if (!launch_went_out(cudaLaunchKernelEx(&launch.config, kernel, params), c.ctas, name, to))
    return retry && launch_on_chip(alone, params);
  traced(params.trace,
         std::string(c.ctas > 1 ? "on-chip kernel, cluster" : "on-chip kernel, one CTA") + (c.registers ? ", W in registers" : ""),
         c.ctas);
  return true;
}

// The on-chip kernel where asked for and it fits, else the tensor-core kernel when chosen, else (or
// when neither can launch) the FMA kernel when it fits.
template <typename scalar_t>
bool launch_persistent(const PersistentConfig& cfg, const PersistentParams<scalar_t>& params) {
  if (cfg.on_chip.use && launch_on_chip<scalar_t>(cfg.on_chip, params)) return true;
  if (cfg.mma.use) {
    const char* to = cfg.use ? "FMA kernel" : "general path";
    if (launch_mma<scalar_t>(cfg.mma, params, to)) return true;
  }
  if (!cfg.use) return false;
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
  p.exchange = nullptr;
  p.trace = arm_step_trace();
  p.T = static_cast<int>(seq.size(0));
  p.B = static_cast<int>(seq.size(1));
  p.H = static_cast<int>(seq.size(2));
  p.rows = cfg.rows;
  p.relu = relu;
  p.backward = backward;
  return p;
}

// ---- the large fp32 GEMMs: TF32 exactly when cudnn.allow_tf32 ---------------------------------
// cudnn.allow_tf32 lets cuDNN's RNN run all of its products in TF32, and only that flag: torch's
// matmul flag governs at::mm, not the RNN. So in fp32 the input projection, the general path's
// per-step products and the weight/input gradients go to cuBLAS directly (cublas_gemm: fp32 in
// and out, TF32 or true fp32 by the RNN's flag alone). rnn_driver.h's AtenGemm interface.

template <bool kTf32>
struct CublasCore {
  void operator()(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta) const {
    cublas_gemm(C, A, B, beta, kTf32);
  }
};
using Tf32Gemm = BetaGemm<CublasCore<true>>;
// fp32 in true fp32 whatever torch's matmul TF32 flag says; fp16 / bf16 with fp32 split-K partial
// sums (the weight gradients sum over T x B rows) whatever its reduced-precision-reduction flags say
using CublasGemm = BetaGemm<CublasCore<false>>;

// fn(gemm): for fp32, Tf32Gemm when cudnn.allow_tf32 lets the RNN use TF32 (at::mm would follow
// the matmul flag instead, which cuDNN's RNN does not); CublasGemm otherwise; fp64 on AtenGemm.
template <typename Fn>
auto with_rnn_gemm(at::ScalarType dtype, Fn&& fn) {
  if (dtype == at::kFloat && cudnn_tf32_allowed(CudnnOp::kRnn)) {
    if (debug_log_enabled()) std::fprintf(stderr, "rnnkern: rnn GEMMs in TF32 (cudnn.allow_tf32)\n");
    return fn(Tf32Gemm{});
  }
  if (dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16) return fn(CublasGemm{});
  return fn(AtenGemm{});
}

// ---- the general path's recurrence on raw pointers ---------------------------------------------
// Where no persistent kernel runs (B > 64, W_hh too large for the grid), each step is one cuBLAS
// product and one elementwise kernel. Through ATen (AtenRecurrence: tensor views, the dispatcher,
// addmm_ and tanh_) a step cost more host time than GPU time: on an H200, fp32 B256 H1024 took
// 22-36 us a step, moving with the host (5.6 and 9.2 ms on two calls), against cuDNN's 20. Here a
// step is one cublasGemmEx and one launch on raw pointers. fp64 keeps AtenRecurrence.

// y[i] <- step_epilogue(y[i], h[i]) in place: act(y) forward, y * act'(h) backward.
template <typename scalar_t>
__global__ void rnn_step_epilogue_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ h, int64_t n,
                                         bool relu, bool backward) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const acc_t hv = backward ? static_cast<acc_t>(h[i]) : acc_t(0);
    y[i] = static_cast<scalar_t>(step_epilogue(static_cast<acc_t>(y[i]), hv, relu, backward));
  }
}

// ---- the general path's steps as one CUDA graph (default; RNNKERN_RNN_GRAPH=0 turns it off) -----
// On an H200 a raw step (fp32 B256 H1024) still took 24.6 us a call against ~12 us of GPU time
// (Nsight: an 8.7 us cuBLAS product and a 3.3 us epilogue, at profiling clocks): the host's two
// launches a step remain the bound. A run of steps captured once as a CUDA graph is one launch a
// call. A graph bakes in its pointers, so it is keyed on them; in a training or benchmark loop the
// caching allocator hands the same blocks back call after call. A run is captured the second time
// its key is seen (a one-off call pays nothing) and replayed from then on. Capture happens on a
// stream of its own (capture is illegal on the legacy default stream; nothing executes while
// capturing) and the graph is launched on the caller's stream, which it is keyed on. cuBLAS runs
// inside the graph on a workspace owned here, one per (device, stream, size), of torch's size and
// under the handle's math mode (both in the key): the same algorithm as the plain loop, so the
// same bits. Graphs of one stream replay in that stream's order, so they never share a workspace
// at once.
// Measured on an H200 (bench/results/h200-20261127-s18.json, T256 B256 H1024): fp32 forward 6.76 ->
// 3.43 ms, forward + backward 14.7 -> 9.35 ms (0.80x / 0.89x cuDNN -> 1.53x / 1.39x); bf16 5.29 ->
// 2.18 ms and 11.7 -> 4.97 ms. So it is the default.

struct StepGraphKey {
  int device;
  cudaStream_t stream;
  int dtype;
  int compute;
  int math_mode;     // the handle's, from torch's matmul TF32 flag: cuBLAS may use TF32 under it
  size_t ws_bytes;   // torch's cuBLAS workspace size (settable at run time): it steers the algorithm
  bool relu, forward;
  int64_t H, stride, rows, t0, t1;  // the run: steps [t0, t1) of rows x H, `stride` elements apart
  const void* base;                 // out (forward) / dz (backward)
  const void* aux;                  // the forward output the backward reads, else null
  const void* w;                    // W_hh
  bool operator==(const StepGraphKey& o) const {
    return std::tie(device, stream, dtype, compute, math_mode, ws_bytes, relu, forward, H, stride, rows, t0, t1, base,
                    aux, w) == std::tie(o.device, o.stream, o.dtype, o.compute, o.math_mode, o.ws_bytes, o.relu,
                                        o.forward, o.H, o.stride, o.rows, o.t0, o.t1, o.base, o.aux, o.w);
  }
};

class StepGraphCache {
 public:
  static StepGraphCache& get() {
    static StepGraphCache* cache = new StepGraphCache();  // never destroyed: no CUDA calls at exit
    return *cache;
  }

  // Issues the run through `steps(handle)` as a graph launch on key.stream and returns true, or
  // returns false (nothing issued) for the caller to run the steps itself: the key's first sight,
  // or a capture that failed.
  template <typename Steps>
  bool run(const StepGraphKey& key, Steps&& steps) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = std::find_if(graphs_.begin(), graphs_.end(), [&](const Entry& e) { return e.key == key; });
    if (it == graphs_.end()) {
      // First sightings are kept apart from the graphs, so keys that never recur cannot push
      // captured graphs out.
      auto seen = std::find(seen_.begin(), seen_.end(), key);
      if (seen == seen_.end()) {
        if (seen_.size() == kMaxSeen) seen_.erase(seen_.begin());
        seen_.push_back(key);
        return false;
      }
      seen_.erase(seen);
      if (graphs_.size() == kMaxGraphs) {  // the least recently used goes (freed once it has run)
        if (graphs_.front().exec != nullptr) cudaGraphExecDestroy(graphs_.front().exec);
        graphs_.erase(graphs_.begin());
      }
      graphs_.push_back({key, capture(key, steps)});  // a failed capture stays, as nullptr: not retried
      it = graphs_.end() - 1;
    } else {  // most recently used to the back
      std::rotate(it, it + 1, graphs_.end());
      it = graphs_.end() - 1;
    }
    if (it->exec == nullptr) return false;
    C10_CUDA_CHECK(cudaGraphLaunch(it->exec, key.stream));
    return true;
  }

 private:
  static constexpr size_t kMaxGraphs = 32, kMaxSeen = 64;
  struct Entry {
    StepGraphKey key;
    cudaGraphExec_t exec;  // nullptr: the capture failed
  };

  template <typename Steps>
  cudaGraphExec_t capture(const StepGraphKey& key, Steps& steps) {
    // never freed (graphs hold its address); a new size gets a new buffer
    at::Tensor& ws = workspaces_[std::make_tuple(key.device, key.stream, key.ws_bytes)];
    if (!ws.defined())
      ws = at::empty({static_cast<int64_t>(key.ws_bytes)},
                     at::TensorOptions().dtype(at::kByte).device(at::kCUDA, key.device));
    // A stream of our own per device, used only to capture on (nothing ever executes on it): a
    // shared pool stream could receive another thread's work in the middle of the capture.
    cudaStream_t& raw = capture_streams_[key.device];
    if (raw == nullptr) C10_CUDA_CHECK(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromExternal(raw, static_cast<c10::DeviceIndex>(key.device));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    // The thread's handle, set up by torch for the caller's stream (math mode included), then
    // pointed at the capture stream and our workspace (cublasSetStream resets the workspace, so it
    // goes first); torch sets stream and workspace again at its next fetch.
    cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
    TORCH_CUDABLAS_CHECK(cublasSetStream(handle, side.stream()));
    TORCH_CUDABLAS_CHECK(cublasSetWorkspace(handle, ws.data_ptr(), key.ws_bytes));
    cudaError_t status = cudaSuccess;
    {
      const c10::cuda::CUDAStreamGuard on_side(side);  // the epilogue launches on the current stream
      status = cudaStreamBeginCapture(side.stream(), cudaStreamCaptureModeThreadLocal);
      if (status == cudaSuccess) {
        try {
          steps(handle);
        } catch (const std::exception& err) {
          TORCH_WARN_ONCE("rnnkern: capturing the RNN steps as a CUDA graph failed (", err.what(), ")");
          status = cudaErrorUnknown;
        }
        // ends the capture whatever happened, leaving the stream usable
        const cudaError_t ended = cudaStreamEndCapture(side.stream(), &graph);
        if (status == cudaSuccess) status = ended;
      }
    }
    if (status == cudaSuccess) status = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // not sticky: clear it
      TORCH_WARN_ONCE("rnnkern: the RNN steps could not be captured as a CUDA graph (", cudaGetErrorString(status),
                      "); such steps run without a graph");
      return nullptr;
    }
    if (debug_log_enabled())
      std::fprintf(stderr, "rnnkern: rnn %s steps [%lld, %lld) captured as a CUDA graph\n",
                   key.forward ? "forward" : "backward", static_cast<long long>(key.t0),
                   static_cast<long long>(key.t1));
    return exec;
  }

  std::mutex mutex_;
  std::vector<Entry> graphs_;        // least recently used first
  std::vector<StepGraphKey> seen_;   // keys seen once, oldest first
  std::map<std::tuple<int, cudaStream_t, size_t>, at::Tensor> workspaces_;
  std::map<int, cudaStream_t> capture_streams_;
};

// Runs of fewer steps gain too little from a graph to pay for its capture.
constexpr int64_t kMinGraphSteps = 8;

bool use_step_graphs(int64_t steps) {
  return steps >= kMinGraphSteps && !env_equals("RNNKERN_RNN_GRAPH", "0") &&
         at::cuda::currentStreamCaptureStatusMayInitCtx() == at::cuda::CaptureStatus::None;  // no nested capture
}

// AtenRecurrence's contract (csrc/rnn_driver.h) for contiguous (T, B, H) buffers.
template <typename scalar_t>
struct CudaRecurrence {
  at::Tensor h0, w_hh;  // contiguous
  bool relu;
  bool tf32;  // fp32 only: TF32 products (cudnn.allow_tf32), else true fp32 (ScopedMathMode)
  cublasComputeType_t compute;

  CudaRecurrence(const at::Tensor& h0_, const at::Tensor& w_hh_, bool relu_, bool tf32_)
      : h0(h0_.contiguous()), w_hh(w_hh_.contiguous()), relu(relu_), tf32(tf32_),
        compute(blas_compute_type(at::cuda::getCudaDataType<scalar_t>(), tf32_)) {}

  // C (rows x H, row-major) = A (rows x H) op(W) + beta C, op(W) = W^T (forward) or W (backward).
  // Column-major, C^T = op'(W) A^T, and W's row-major storage reads as W^T column-major.
  void gemm(cublasHandle_t handle, scalar_t* C, const scalar_t* A, bool forward, float beta, int64_t rows) const {
    TORCH_CHECK(rows <= std::numeric_limits<int>::max() && w_hh.size(0) <= std::numeric_limits<int>::max(),
                "rnn: the batch (", rows, ") and hidden size (", w_hh.size(0), ") must be below 2^31 on CUDA");
    const int H = static_cast<int>(w_hh.size(0));
    const float alpha = 1.f;
    const cudaDataType_t type = at::cuda::getCudaDataType<scalar_t>();
    const ScopedMathMode math_mode(handle, type, tf32);
    TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, forward ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, H,
                                      static_cast<int>(rows), H, &alpha, w_hh.const_data_ptr<scalar_t>(), type, H, A,
                                      type, H, &beta, C, type, H, compute, CUBLAS_GEMM_DEFAULT));
  }

  void epilogue(scalar_t* y, const scalar_t* h, int64_t n, bool backward) const {
    constexpr int kThreads = 256;
    const int64_t most = int64_t{at::cuda::getCurrentDeviceProperties()->multiProcessorCount} * 8;
    const auto blocks = static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, most));
    rnn_step_epilogue_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(y, h, n, relu,
                                                                                                    backward);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  // What a captured run bakes in. The math mode is read from `handle` as torch set it up for the
  // caller's stream (it follows torch's matmul TF32 flag, which may change between calls).
  StepGraphKey graph_key(cublasHandle_t handle, bool forward, int64_t H, int64_t stride, int64_t rows, int64_t t0,
                         int64_t t1, const void* base, const void* aux) const {
    cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
    TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle, &math_mode));
    return {w_hh.get_device(), at::cuda::getCurrentCUDAStream().stream(), static_cast<int>(w_hh.scalar_type()),
            static_cast<int>(compute), static_cast<int>(math_mode), at::cuda::getChosenWorkspaceSize(), relu,
            forward, H, stride, rows, t0, t1, base, aux, w_hh.const_data_ptr()};
  }

  void forward(at::Tensor& out, int64_t t0, int64_t t1, int64_t rows) const {
    const int64_t H = out.size(2), step = out.size(1) * H;
    if (H == 0) return;
    scalar_t* base = out.data_ptr<scalar_t>();
    // steps [from, to): out[t] holds the step's input projection on entry
    auto steps = [&](cublasHandle_t handle, int64_t from, int64_t to) {
      for (int64_t t = from; t < to; ++t) {
        scalar_t* y = base + t * step;
        gemm(handle, y, t == 0 ? h0.const_data_ptr<scalar_t>() : base + (t - 1) * step, true, 1.f, rows);
        epilogue(y, nullptr, rows * H, false);
      }
    };
    int64_t from = t0;
    if (use_step_graphs(t1 - t0)) {
      const cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
      if (from == 0) {  // step 0 reads the caller's h0: outside the graph
        steps(handle, 0, 1);
        from = 1;
      }
      const StepGraphKey key = graph_key(handle, true, H, step, rows, from, t1, base, nullptr);
      if (StepGraphCache::get().run(key, [&](cublasHandle_t h) { steps(h, from, t1); })) return;
    }
    // fetched here, after any capture: a capture leaves the thread's handle set to its stream
    steps(at::cuda::getCurrentCUDABlasHandle(), from, t1);
  }

  void backward(at::Tensor& dz, const at::Tensor& grad_out, const at::Tensor& out, int64_t t0, int64_t t1,
                int64_t rows) const {
    const int64_t H = dz.size(2), step = dz.size(1) * H;
    if (H == 0) return;
    // rnn_backward_cuda hands these in contiguous (raw pointer arithmetic below)
    TORCH_INTERNAL_ASSERT(grad_out.is_contiguous() && out.is_contiguous());
    scalar_t* d = dz.data_ptr<scalar_t>();
    const scalar_t* h = out.const_data_ptr<scalar_t>();
    // grad_out[t, :rows] for the whole run in one strided copy; each product then adds onto it
    // (beta = 1: one rounding, as AtenRecurrence's addmm)
    const size_t pitch = step * sizeof(scalar_t);
    if (pitch <= at::cuda::getCurrentDeviceProperties()->memPitch) {
      C10_CUDA_CHECK(cudaMemcpy2DAsync(d + t0 * step, pitch, grad_out.const_data_ptr<scalar_t>() + t0 * step, pitch,
                                       rows * H * sizeof(scalar_t), t1 - t0, cudaMemcpyDeviceToDevice,
                                       at::cuda::getCurrentCUDAStream()));
    } else {  // steps of more than memPitch bytes (~2 GB), which cudaMemcpy2D refuses
      dz.narrow(0, t0, t1 - t0).narrow(1, 0, rows).copy_(grad_out.narrow(0, t0, t1 - t0).narrow(1, 0, rows));
    }
    auto steps = [&](cublasHandle_t handle) {
      for (int64_t t = t1 - 1; t >= t0; --t) {
        gemm(handle, d + t * step, d + (t + 1) * step, false, 1.f, rows);
        epilogue(d + t * step, h + t * step, rows * H, true);
      }
    };
    if (use_step_graphs(t1 - t0) &&
        StepGraphCache::get().run(graph_key(at::cuda::getCurrentCUDABlasHandle(), false, H, step, rows, t0, t1, d, h),
                                  steps))
      return;
    steps(at::cuda::getCurrentCUDABlasHandle());
  }
};

// fn(step) with CudaRecurrence for fp32 / fp16 / bf16 (TF32 exactly when gemm is Tf32Gemm),
// AtenRecurrence for fp64.
template <typename Gemm, typename Fn>
auto with_recurrence(const at::Tensor& h0, const at::Tensor& w_hh, bool relu, const Gemm& gemm, Fn&& fn) {
  if (h0.scalar_type() == at::kDouble) {
    AtenRecurrence step{h0, w_hh, relu};
    return fn(step);
  }
  using Result = decltype(fn(std::declval<CudaRecurrence<float>&>()));
  Result result;
  dispatch_persistent_dtype(h0.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    CudaRecurrence<scalar_t> step(h0, w_hh, relu, std::is_same_v<Gemm, Tf32Gemm>);
    result = fn(step);
  });
  return result;
}

// bs[t] on the device, or undefined when every sequence runs all T steps. Staged in pinned memory
// so the copy is asynchronous (the caching host allocator keeps the block until the copy is done).
at::Tensor live_rows(const std::vector<int64_t>& bs, int64_t B, const at::Tensor& like) {
  if (std::all_of(bs.begin(), bs.end(), [B](int64_t n) { return n == B; })) return at::Tensor();
  at::Tensor host = at::empty({static_cast<int64_t>(bs.size())}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
  std::copy(bs.begin(), bs.end(), host.data_ptr<int>());
  return host.to(like.device(), /*non_blocking=*/true);
}

}  // namespace

std::tuple<std::string, at::Tensor> rnn_step_trace() {
  const StepTrace& t = last_step_trace();
  if (!t.stamps.defined()) return {"", at::empty({0, kTraceSteps, kTraceSlots}, at::kLong)};
  return {t.kernel, t.stamps.cpu()};  // (a device-to-host copy: waits for the traced launch)
}

std::tuple<at::Tensor, at::Tensor> rnn_forward_cuda(const at::Tensor& input, const at::Tensor& hx,
                                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                    const std::optional<at::Tensor>& b_ih,
                                                    const std::optional<at::Tensor>& b_hh,
                                                    const std::optional<at::Tensor>& lengths, bool relu) {
  const RnnShapes s = check_rnn_args("rnn_forward", input, hx, w_ih, w_hh, b_ih, b_hh);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  clear_step_trace();
  const std::vector<int64_t> bs = batch_sizes("rnn_forward", s, lengths);
  return with_rnn_gemm(input.scalar_type(), [&](const auto& gemm) -> std::tuple<at::Tensor, at::Tensor> {
    if (s.T > 0 && s.T < (int64_t(1) << 31)) {
      const PersistentConfig cfg = choose_rnn_path(input, s.B, s.H);
      if (cfg.use || cfg.mma.use || cfg.on_chip.use) {
        at::Tensor out = at::empty({s.T, s.B, s.H}, input.options());
        at::Tensor out2 = out.view({s.T * s.B, s.H});
        rnn_input_projection(out2, input, w_ih, b_ih, b_hh, gemm);
        const at::Tensor w = w_hh.contiguous(), h0 = hx.contiguous(), live = live_rows(bs, s.B, input);
        bool launched = false;
        dispatch_persistent_dtype(input.scalar_type(), [&](auto zero) {
          using scalar_t = decltype(zero);
          launched =
              launch_persistent<scalar_t>(cfg, make_params<scalar_t>(w, out, &h0, nullptr, live, cfg, relu, false));
        });
        if (launched) return {out, rnn_last_state(out, h0, lengths)};
      }
    }
    return with_recurrence(hx, w_hh, relu, gemm, [&](auto& step) {
      return rnn_forward_loop(input, hx, w_ih, b_ih, b_hh, bs, lengths, step, gemm);
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  const RnnShapes s = check_rnn_backward_args(grad_output, grad_hn, input, hx, w_ih, w_hh, output);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  clear_step_trace();
  const std::vector<int64_t> bs = batch_sizes("rnn_backward", s, lengths);
  using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
  return with_rnn_gemm(input.scalar_type(), [&](const auto& gemm) -> Grads {
    if (s.T > 0 && s.T < (int64_t(1) << 31)) {
      const PersistentConfig cfg = choose_rnn_path(input, s.B, s.H);
      if (cfg.use || cfg.mma.use || cfg.on_chip.use) {
        // dz starts as the upstream gradient of each step's output; dL/dh_n enters at each
        // sequence's last step: rows [bs[t+1], bs[t]) end at step t (as in rnn_backward_loop), one
        // add per such run (no index_add_, which is atomic on CUDA and refused in deterministic mode).
        at::Tensor dz = grad_output.clone(at::MemoryFormat::Contiguous);
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t live = bs[t], live_next = t + 1 < s.T ? bs[t + 1] : 0;
          if (live > live_next)
            dz.select(0, t).narrow(0, live_next, live - live_next).add_(grad_hn.narrow(0, live_next, live - live_next));
        }
        const at::Tensor w_t = w_hh.t().contiguous(), out = output.contiguous(), live = live_rows(bs, s.B, input);
        bool launched = false;
        dispatch_persistent_dtype(input.scalar_type(), [&](auto zero) {
          using scalar_t = decltype(zero);
          launched =
              launch_persistent<scalar_t>(cfg, make_params<scalar_t>(w_t, dz, nullptr, &out, live, cfg, relu, true));
        });
        // dz now holds dL/d(pre-activation) for every step; the rest is large GEMMs
        if (launched) return rnn_grads_from_dz(dz, grad_hn, input, hx, w_ih, w_hh, out, bs, has_bias, gemm);
      }
    }
    // contiguous once here, not once per run of steps (CudaRecurrence reads them as raw buffers)
    const at::Tensor go = grad_output.contiguous(), out = output.contiguous();
    return with_recurrence(hx, w_hh, relu, gemm, [&](auto& step) {
      return rnn_backward_loop(go, grad_hn, input, hx, w_ih, w_hh, out, bs, relu, has_bias, step, gemm);
    });
  });
}

}  // namespace rnnkern
