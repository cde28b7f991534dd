// CUDA runtime queries about a kernel, asked once per process and device. Benchmarks time each
// call alone, so host time before a launch is exposed, and every call used to repeat the same
// attribute sets and occupancy probes (several us). Their answers depend only on the device, the
// kernel and the launch shape, so cached_query asks each once and remembers the answer. Used by
// rnn.cu's persistent launches, conv_transpose.cu's block GEMMs and conv.cu's ring kernels. Also
// the launch refusals and cluster launch configurations those share.
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/FunctionRef.h>

#include <map>
#include <mutex>
#include <tuple>

namespace rnnkern {

// What a query asks (part of the cache key).
enum class QueryKind { kSharedMemoryCap, kNonPortableClusters, kPtxVersion, kBlocksPerSm, kResidentClusters };

// One query about one kernel and the launch shape its answer depends on (0 where it does not);
// brace-initialised in member order (the device build is C++17: no designated initialisers).
struct KernelQuery {
  QueryKind kind;
  const void* kernel;
  int block = 0, grid = 0, cluster = 0;
  size_t smem = 0;
};

template <typename Kernel>
const void* kernel_id(Kernel kernel) {
  return reinterpret_cast<const void*>(kernel);
}

// ask() the first time q is seen on the current device, its stored answer after. The lock is held
// through ask(), so first calls on two threads (autograd's device thread runs the backward) ask
// once; an ask() that throws stores nothing.
inline int cached_query(const KernelQuery& q, c10::function_ref<int()> ask) {
  using Key = std::tuple<int, QueryKind, const void*, int, int, int, size_t>;
  static std::mutex mutex;
  static std::map<Key, int> answers;
  const Key key{at::cuda::current_device(), q.kind, q.kernel, q.block, q.grid, q.cluster, q.smem};
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = answers.find(key);
  if (it == answers.end()) it = answers.emplace(key, ask()).first;
  return it->second;
}

// Errors a launch configuration can be refused with (not sticky): the caller falls back. Anything
// else is a real failure and is raised.
inline bool launch_refused(cudaError_t err) {
  return err == cudaErrorInvalidValue || err == cudaErrorNotSupported || err == cudaErrorInvalidConfiguration ||
         err == cudaErrorCooperativeLaunchTooLarge || err == cudaErrorInvalidClusterSize;
}

// A failed launch or query: raised unless its configuration was refused; a refusal's error is
// cleared so the caller can fall back.
inline void clear_refusal(cudaError_t err) {
  if (!launch_refused(err)) C10_CUDA_CHECK(err);
  (void)cudaGetLastError();
}

// A configuration query's answer n, or 0 when the configuration was refused; any other error is
// raised. (Callers hold the query's error in a local first: as two arguments of one call, n could
// be read before the query writes it.)
inline int refused_as_zero(cudaError_t err, int n) {
  if (err == cudaSuccess) return n;
  clear_refusal(err);
  return 0;
}

// Launch configuration for `grid` CTAs of `threads` in clusters of `cluster_ctas` along x;
// cooperative() adds the cooperative attribute (every cluster co-resident, which a barrier across
// clusters needs). For cudaLaunchKernelEx and cudaOccupancyMaxActiveClusters (rnn.cu's persistent
// kernels, conv.cu's TMA forms).
struct ClusterLaunch {
  cudaLaunchAttribute attrs[2] = {};
  cudaLaunchConfig_t config = {};
  ClusterLaunch(dim3 grid, int cluster_ctas, size_t smem, int threads,
                cudaStream_t stream = at::cuda::getCurrentCUDAStream()) {
    attrs[0].id = cudaLaunchAttributeClusterDimension;
    attrs[0].val.clusterDim.x = cluster_ctas;
    attrs[0].val.clusterDim.y = 1;
    attrs[0].val.clusterDim.z = 1;
    attrs[1].id = cudaLaunchAttributeCooperative;
    attrs[1].val.cooperative = 1;
    config.gridDim = grid;
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attrs;
    config.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;  // config.attrs points into this object
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;
  void cooperative() { config.numAttrs = 2; }
};

// The dynamic shared-memory cap, not this call's size: one value for every call, so a launch on
// another host thread (autograd's device thread runs the backward) cannot lower it between our
// set and our launch. The cap is the opt-in limit less the kernel's static shared memory (the two
// together may not exceed it; cudaFuncSetAttribute refuses more). Being the same value every
// time, and kept by the kernel on that device once set, it is set once per device and kernel;
// occupancy probes count on it and run after it. Returns the cap: a launch asking for more fails.
template <typename Kernel>
int allow_full_shared_memory(Kernel kernel) {
  return cached_query({QueryKind::kSharedMemoryCap, kernel_id(kernel)}, [&] {
    cudaFuncAttributes attr;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const size_t optin = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
    const int cap = static_cast<int>(optin > attr.sharedSizeBytes ? optin - attr.sharedSizeBytes : 0);
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, cap));
    return cap;
  });
}

// Resident blocks of `kernel` an SM with `threads` threads and `smem` bytes of dynamic shared
// memory (after allow_full_shared_memory where smem exceeds the default 48 KB).
template <typename Kernel>
int blocks_per_sm(Kernel kernel, int threads, size_t smem) {
  return cached_query({QueryKind::kBlocksPerSm, kernel_id(kernel), threads, 0, 0, smem}, [&] {
    int n = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
    return n;
  });
}

}  // namespace rnnkern
