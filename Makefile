# Two commands for a fresh machine: `make demo` and `make test` (README).
# Both create .venv if missing and install the pinned stack (constraints.txt) with
# `pip install -e .[test,train]`; the install is redone only when pyproject.toml or
# constraints.txt change. `make test-latest` runs the same tests in .venv-latest on the newest
# releases pip resolves with no constraints (what a ComfyUI user installs today) and `make test-oldest`
# in .venv-oldest on the oldest releases pyproject.toml admits (constraints-oldest.txt); CI runs all three.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.singer-installed
VENV_LATEST ?= .venv-latest
VENV_OLDEST ?= .venv-oldest
PYTEST_ARGS ?=
# OpenMP threads sleep instead of spinning between torch ops: on small shared CPUs spinning made the
# motion sampler 10-60x slower (benchmarks/motion_speed.py). Users can override it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test test-latest test-oldest test-all demo bench gpu-check comfyui-deps clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[test,train]"
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	@echo "== pinned stack (constraints.txt) =="; $(BIN)/python -m singer_core.env
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The newest releases: no constraints file, every package upgraded to what pip resolves today.
test-latest:
	@test -x $(VENV_LATEST)/bin/python || $(PYTHON) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip install --disable-pip-version-check -q --upgrade --upgrade-strategy eager -e ".[test,train]"
	@echo "== newest releases (no constraints) =="; $(VENV_LATEST)/bin/python -m singer_core.env
	$(VENV_LATEST)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The oldest releases pyproject.toml admits (constraints-oldest.txt): its lower bounds are what this tests.
test-oldest:
	@test -x $(VENV_OLDEST)/bin/python || $(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --disable-pip-version-check -q -c constraints-oldest.txt -e ".[test,train]"
	@echo "== oldest supported releases (constraints-oldest.txt) =="; $(VENV_OLDEST)/bin/python -m singer_core.env
	$(VENV_OLDEST)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m singer_core.demo --out out

bench: $(STAMP)
	$(BIN)/python benchmarks/wavelet.py
	$(BIN)/python benchmarks/separation.py
	$(BIN)/python benchmarks/render.py

# On a lent CUDA machine: CUDA/Triton tests, full-size SINGER (official preset and fast default), NeRF
# torch vs Triton at 512^2, motion sampler -> out/gpu_check.json (GPU_CHECK_ARGS=--dry-run: CPU, reduced size).
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	@mkdir -p out
	$(BIN)/python benchmarks/gpu_check.py --json out/gpu_check.json $(GPU_CHECK_ARGS)

# Developers: install a ComfyUI checkout's requirements into the same venv, so the
# `comfyui`/`browser` tests can run it (COMFYUI_PATH=/path/to/ComfyUI make comfyui-deps).
comfyui-deps: $(STAMP)
	@test -n "$(COMFYUI_PATH)" || (echo "set COMFYUI_PATH to a ComfyUI checkout"; exit 2)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -r "$(COMFYUI_PATH)/requirements.txt" requests

clean:
	rm -rf $(VENV) $(VENV_LATEST) $(VENV_OLDEST) out .pytest_cache
