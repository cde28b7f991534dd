// Output buffers the CPU kernels are about to write in full.
//
// A fresh multi-megabyte allocation is an mmap whose first touch costs one page fault per 4 KB
// page (kernel entry + zeroing): measured on this 2-core Sapphire Rapids VM, writing 67 MB into
// new memory takes ~23 ms against ~5 ms into memory already mapped, so for a memory-bound op such
// as max-unpool the faults are most of the time. Advising transparent huge pages before the first
// touch (THP in its common "madvise" mode) turns ~16k faults into ~32: the same write takes ~8 ms.
// The advice is only a hint: where THP is off or the call fails nothing changes.
#pragma once
#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace rnnkern {

inline at::Tensor empty_for_full_write(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kMinBytes = size_t{4} << 20;  // smaller buffers are usually recycled by malloc, not faulted
  const size_t bytes = t.nbytes();
  if (t.device().is_cpu() && bytes >= kMinBytes) {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t begin = (p + page - 1) & ~(page - 1), end = (p + bytes) & ~(page - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return t;
}

}  // namespace rnnkern
