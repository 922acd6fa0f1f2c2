# The two commands in README.md: `make tutorial` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmisa-installed
PROFILE ?= standard
OUT ?= runs/$(PROFILE)
# Put the venv first so that Jupyter kernels started by papermill and nbval use it.
export PATH := $(abspath $(BIN)):$(PATH)
# PyTorch's OpenMP threads (libgomp) wait for the next op by spinning, ~3 ms by default. Default 2D training
# step, 2 cores: spinning 60 ms on a quiet machine, 0.4-3.5 s when another program busies a core; sleeping at
# once (OMP_WAIT_POLICY=PASSIVE) 110 ms quiet, 0.3 s shared; spinning ~0.1 ms, then sleeping, 62 ms quiet,
# 0.34 s shared. GOMP_SPINCOUNT overrides OMP_WAIT_POLICY. On a machine that stays shared, OMP_NUM_THREADS=1
# is faster: 85 ms both.
export GOMP_SPINCOUNT ?= 10000

.PHONY: install tutorial test test-fast test-browser bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev,dicom,browser]"
	@touch $@

install: $(STAMP)

## The main job: every notebook on the embedded phantom data, executed into $(OUT).
tutorial: $(STAMP)
	$(BIN)/lmisa-lite tutorial --profile $(PROFILE) --out $(OUT)

## All tests: unit tests, notebooks under nbval (quick profile), the quick tutorial end to end.
test: $(STAMP)
	.ci/install-browser
	LMISA_PROFILE=quick $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env --durations=15

## Unit tests only (no notebooks).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

## The end-to-end JupyterLab test in headless Chromium, alone.
test-browser: $(STAMP)
	.ci/install-browser
	LMISA_PROFILE=quick $(BIN)/python -m pytest tests -m browser

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mlngm.py
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf runs .pytest_cache
