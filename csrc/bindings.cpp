// The one place that lists every kernel rnnkern exports: the `rnnkern::` operator schemas and,
// per dispatch key, the csrc/cpu/<op>.cpp or csrc/cuda/<op>.cu function that runs each. torch's
// dispatcher routes by device, so a call from Python (`torch.ops.rnnkern.<name>`) reaches the
// kernel in a few microseconds; a Python-defined torch.library.custom_op spent ~20 us per call
// in its own wrapper (bench/NOTES.md, host overhead). The autograd formulas are in
// csrc/autograd/<op>.cpp; the fake (meta) implementations are registered in Python, in the
// module set_python_module names. Every op is tagged pt2_compliant (as torch.library.custom_op
// tags its ops): opcheck passes on each, so torch.compile may trust them in strict mode too.
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/blas_emulation.h"
#include "ops.h"

TORCH_LIBRARY(rnnkern, m) {
  const std::vector<at::Tag> pt2 = {at::Tag::pt2_compliant_tag};
  m.set_python_module("rnnkern.ops.max_unpool");
  m.def("max_unpool_forward(Tensor input, Tensor? indices, int mode, int[] kernel, int[] stride, int[] padding, "
        "SymInt[] output_size, bool check_indices=True) -> Tensor", pt2);
  m.def("max_unpool_backward(Tensor grad_output, Tensor? indices, int mode, SymInt[] input_size, int[] kernel, "
        "int[] stride, int[] padding) -> Tensor", pt2);
  m.set_python_module("rnnkern.ops.rnn");
  m.def("rnn_forward(Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
        "Tensor? lengths, bool relu) -> (Tensor, Tensor)", pt2);
  m.def("rnn_backward(Tensor grad_output, Tensor grad_hn, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
        "Tensor output, Tensor? lengths, bool relu, bool has_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor)", pt2);
  m.set_python_module("rnnkern.ops.conv");
  m.def("conv2d_forward(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
        "int groups) -> Tensor", pt2);
  m.def("conv2d_backward_input(Tensor grad_output, Tensor weight, SymInt[] input_size, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> Tensor", pt2);
  m.def("conv2d_backward_weight(Tensor grad_output, Tensor input, SymInt[] weight_size, int[] stride, int[] padding, "
        "int[] dilation, int groups, bool bias_grad) -> (Tensor, Tensor)", pt2);
  m.set_python_module("rnnkern.ops.conv_transpose");
  m.def("conv_transpose2d_forward(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
        "int[] output_padding, int groups, int[] dilation) -> Tensor", pt2);
  m.def("conv_transpose2d_backward_input(Tensor grad_output, Tensor weight, SymInt[] input_size, int[] stride, "
        "int[] padding, int[] output_padding, int groups, int[] dilation) -> Tensor", pt2);
  m.def("conv_transpose2d_backward_weight(Tensor grad_output, Tensor input, SymInt[] weight_size, int[] stride, "
        "int[] padding, int[] output_padding, int groups, int[] dilation, bool bias_grad) -> (Tensor, Tensor)", pt2);
}

// Registers every op's kernel for one backend: <op>_cpu under CPU, <op>_cuda under CUDA.
#define RNNKERN_IMPL_ALL(m, backend)                                                              \
  m.impl("max_unpool_forward", &rnnkern::max_unpool_forward_##backend);                           \
  m.impl("max_unpool_backward", &rnnkern::max_unpool_backward_##backend);                         \
  m.impl("rnn_forward", &rnnkern::rnn_forward_##backend);                                         \
  m.impl("rnn_backward", &rnnkern::rnn_backward_##backend);                                       \
  m.impl("conv2d_forward", &rnnkern::conv2d_forward_##backend);                                   \
  m.impl("conv2d_backward_input", &rnnkern::conv2d_backward_input_##backend);                     \
  m.impl("conv2d_backward_weight", &rnnkern::conv2d_backward_weight_##backend);                   \
  m.impl("conv_transpose2d_forward", &rnnkern::conv_transpose2d_forward_##backend);               \
  m.impl("conv_transpose2d_backward_input", &rnnkern::conv_transpose2d_backward_input_##backend); \
  m.impl("conv_transpose2d_backward_weight", &rnnkern::conv_transpose2d_backward_weight_##backend)

TORCH_LIBRARY_IMPL(rnnkern, CPU, m) { RNNKERN_IMPL_ALL(m, cpu); }

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(rnnkern, CUDA, m) { RNNKERN_IMPL_ALL(m, cuda); }
#endif

// The Python module: loading it registers the ops above; it also says what was built.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnkern kernels (CPU + CUDA), registered as torch.ops.rnnkern.*; use rnnkern.ops, not this module";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("rnn_cpu_step", &rnnkern::rnn_cpu_step, "the CPU recurrence step float32 runs on (for rnnkern info)");
  m.def(
      "blas_gemm_emulated",
      [](at::Tensor C, const at::Tensor& A, const at::Tensor& B, float beta) {
        rnnkern::EmulatedCublasGemm{}(C, A, B, beta);
      },
      "C = A B + beta C (CPU tensors, in place) through the cuBLAS call the CUDA build would make, emulated "
      "(csrc/cpu/blas_emulation.h; for the tests)");
#ifdef WITH_CUDA
  m.def("rnn_step_trace", &rnnkern::rnn_step_trace,
        "(kernel, stamps) of the last persistent RNN launch under RNNKERN_RNN_TRACE=1 (a diagnostic)");
  m.def("conv2d_tma_stage_probe", &rnnkern::conv2d_tma_stage_probe_cuda,
        "(bytes, tile_w, tiles_w) of one stage of the TMA convolution form's copies (a diagnostic for the tests)");
  m.def("wgmma_mn_probe", &rnnkern::wgmma_mn_probe_cuda,
        "A^T B through the TMA grad_weight's MN-major wgmma descriptors (a diagnostic for the tests)");
#endif
}
