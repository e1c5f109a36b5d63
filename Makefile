# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
# pip repeats a harmless warning per package about this machine's local indexes.
QUIET  := 2>&1 | (grep -v "^WARNING: Location" || true)

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: setup train test lint bench gpu-check tensorboard clean

setup: $(STAMP)

# torch is pinned to the CPU build that is on the machine's disk; a looser
# spec would pull a multi-GB CUDA build. Users with a GPU install their own torch.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0 $(QUIET)
	$(PIP) -e ".[dev]" $(QUIET)
	$(PY) -c "import torch, gymnasium, envs, memory_modules, agents"
# agents.report's statistics: rliable imports arch, which breaks on the wrong pandas
	$(PY) -c "import rliable.library, hydra_plugins.hydra_joblib_launcher"
# the GRU scan's C++ loops, built once per machine (~30 s; memory_modules/gru_native.py)
	$(PY) -m memory_modules.gru_native
	touch $(STAMP)

# The default experiment (configs/experiment/default.yaml): GRU on DelayedMatch on the CPU,
# a few minutes. Ends with the evaluation's JSON line; the run is in runs/default/<time>/
# (tb/ for `tensorboard --logdir runs`, checkpoints/latest.pt, videos/final.mp4).
train: setup
	$(PY) -m agents.train experiment=default

test: setup
	$(PY) -m pytest -q

# TensorBoard from the project's venv (it is not on PATH): http://localhost:6006
tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/env_throughput.py

# On a machine with an NVIDIA GPU: a CUDA venv (benchmarks/.peers/cuda), the CUDA tests,
# env and training throughput on cuda up to 1 M copies, a short training, and a markdown
# report (runs/gpu_check/report.md). Without a GPU: one line saying so. GPU_CHECK_ARGS:
# e.g. --python /path/to/python (one that has CUDA torch and the project) or --wheels DIR.
gpu-check:
	@python3 benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
