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

build: install
	$(PIP) install -q --no-build-isolation -e . 2>&1 | grep -v "^$$" || true
	$(VPY) -c "import rnnkern, json; print(json.dumps(rnnkern.info(), indent=1))"

demo: build
	$(VPY) -m rnnkern.demo

test: build
	$(VPY) -m pytest -q tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc

bench: build
	$(VPY) -m rnnkern.cli bench --json bench/results/latest.json --plot bench/results/latest.png

# Compile + link the CUDA kernels even without a GPU (torch must be a CUDA build).
cuda-check: install
	FORCE_CUDA=1 $(PIP) install -q --no-build-isolation -e .
	$(VPY) -c "import rnnkern; i = rnnkern.info(); assert i['cuda_kernels_compiled'], i; print('CUDA kernels compiled for', i['cuda_archs'])"

clean:
	rm -rf build rnnkern/_C*.so rnnkern/_build_info.py *.egg-info
