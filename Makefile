# Two entry points on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv, install what they need and are safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Debian packages the project needs: the real Fashion-MNIST images (full-set loader tests) and
# Prometheus (promtool checks the service's metrics exposition).
APT_PACKAGES := dataset-fashion-mnist prometheus prometheus-alertmanager
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: demo test lint typecheck pytest system-deps install install-dev bundle-data bench \
	fashion-mnist-benchmark clean

demo: install
	$(VENV)/bin/sslmem demo

test: install-dev system-deps lint typecheck pytest

pytest:
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch/torchvision are pinned explicitly so pip takes the builds already on this machine's disk.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Regenerate the bundled Fashion-MNIST subset from Debian's dataset-fashion-mnist (reproducible).
bundle-data: install system-deps
	$(PY) scripts/make_bundled_dataset.py

bench: install
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/allocator.py
	$(PY) benchmarks/cli_startup.py

# The documented full Fashion-MNIST run (docs/training.md): the two encoders train side by side,
# one thread each; re-running resumes an interrupted training and redoes scoring and evaluation.
FM_OUT ?= runs/fashion-mnist
FM_RECIPE ?= fashion-mnist
fashion-mnist-benchmark: install system-deps
	mkdir -p $(FM_OUT)
	$(VENV)/bin/sslmem split --config $(FM_RECIPE) --out $(FM_OUT)/split.json
	pids=""; for role in candidate reference; do \
	  resume=$$( [ -f $(FM_OUT)/$$role/resume.pt ] && echo --resume ); \
	  SSLMEM_NUM_THREADS=1 $(VENV)/bin/sslmem train --config $(FM_RECIPE) --split $(FM_OUT)/split.json \
	    --role $$role --no-progress $$resume --out $(FM_OUT)/$$role & pids="$$pids $$!"; \
	done; for pid in $$pids; do wait $$pid || exit 1; done
	$(VENV)/bin/sslmem score --config $(FM_RECIPE) --split $(FM_OUT)/split.json \
	  --candidate $(FM_OUT)/candidate/encoder.safetensors \
	  --reference $(FM_OUT)/reference/encoder.safetensors --no-progress --out $(FM_OUT)/scores
	for role in candidate reference; do \
	  $(VENV)/bin/sslmem evaluate --config $(FM_RECIPE) --encoder $(FM_OUT)/$$role/encoder.safetensors \
	    --out $(FM_OUT)/evaluation-$$role.json; \
	done

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache
