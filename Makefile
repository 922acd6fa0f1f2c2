# The two commands in README.md: `make tutorial` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmisa-installed
PROFILE ?= standard
OUT ?= runs/$(PROFILE)
# Put the venv first so that Jupyter kernels started by papermill and nbval use it.
export PATH := $(abspath $(BIN)):$(PATH)
# PyTorch's OpenMP threads spin while waiting; on a busy 2-core machine that makes training several times slower.
export OMP_WAIT_POLICY ?= PASSIVE

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
