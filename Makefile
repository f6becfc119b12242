# Two entry points: `make demo` (the main job on SmolLM2) and `make test` (the test suite).
# Both create .venv on first use and install the package with its test extras from this repo.
VENV ?= .venv
PY := $(VENV)/bin/python
export PAINTERS_CACHE ?= $(HOME)/.cache/painters

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel this machine carries; a later torch range it satisfies installs nothing more
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.6"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check painters tests

demo: install
	bash scripts/demo.sh

.PHONY: install test lint demo
