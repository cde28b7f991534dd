# Two commands for a fresh machine: `make demo` and `make test`. Everything lives in .venv.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
# torch 2.14.1 is a CUDA (cu130) build: it runs on CPU-only machines and lets the CUDA kernels
# compile wherever nvcc 13 is installed. Override with TORCH_SPEC="torch==2.13.0" for CPU-only.
TORCH_SPEC ?= torch==2.14.1
DEPS    := numpy pybind11 ninja pytest tqdm matplotlib expecttest setuptools wheel

.PHONY: install build demo test bench cuda-check clean

$(VENV)/.deps:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" $(DEPS)
	touch $@

install: $(VENV)/.deps

# CUDA kernels are built when a GPU is visible (or FORCE_CUDA=1); a CPU-only machine skips the
# long nvcc compile here and checks it separately with `make cuda-check`.
build: install
	@mkdir -p build
	@gpu=$$($(VPY) -c "import torch; print(int(torch.cuda.is_available()))"); \
	if [ "$$gpu" = 1 ] || [ "$(FORCE_CUDA)" = 1 ]; then env=""; else env="RNNKERN_BUILD_CUDA=0"; fi; \
	echo "building rnnkern ($${env:-with CUDA kernels}); log: build/pip-build.log"; \
	env $$env $(PIP) install -v --no-build-isolation -e . > build/pip-build.log 2>&1 \
	  || { tail -n 80 build/pip-build.log; exit 1; }
	@grep "rnnkern setup" build/pip-build.log || true
	$(VPY) -m rnnkern.cli info

demo: build
	$(VPY) -m rnnkern.demo

test: build
	$(VPY) -m pytest -q tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc

bench: build
	$(VPY) -m rnnkern.cli bench --json auto --plot bench/results/latest.png

# Compile + link the CUDA kernels even without a GPU (torch must be a CUDA build).
CUDA_CHECK_ARCHS ?= 8.0;9.0
cuda-check: install
	@mkdir -p build
	@echo "compiling + linking the CUDA kernels for $(CUDA_CHECK_ARCHS); log: build/pip-cuda.log"
	@FORCE_CUDA=1 RNNKERN_PTXAS_REPORT=1 TORCH_CUDA_ARCH_LIST="$(CUDA_CHECK_ARCHS)" $(PIP) install -v --no-build-isolation -e . \
	  > build/pip-cuda.log 2>&1 || { grep -E "error" build/pip-cuda.log | head -n 40; tail -n 40 build/pip-cuda.log; exit 1; }
	$(VPY) -c "import rnnkern; i = rnnkern.info(); assert i['cuda_kernels_compiled'], i; print('CUDA kernels compiled and linked for', i['cuda_archs'])"
	$(VPY) scripts/check_ptxas_report.py build/pip-cuda.log
	@# the CUDA build's operator registration (a CUDA kernel for every op beside the CPU one) and the
	@# CPU kernels it also carries, without a GPU
	$(VPY) -m pytest -q -p no:cacheprovider tests/ops/test_registration.py tests/test_info.py

clean:
	rm -rf build rnnkern/_C*.so rnnkern/_build_info.py *.egg-info
