# The two commands in README.md: `make tutorial` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmisa-installed
PROFILE ?= standard
OUT ?= runs/$(PROFILE)
# Put the venv first so that Jupyter kernels started by papermill and nbval use it.
export PATH := $(abspath $(BIN)):$(PATH)
# PyTorch's OpenMP threads (libgomp) wait for the next op by spinning ~3 ms by default: fastest on a quiet machine,
# but training collapses when the cores are shared (2 cores, default 2D step: 50 ms quiet, 0.4-3.5 s with one core
# busy). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) never collapses but doubles the quiet step (96 ms). Spinning
# ~0.1 ms, then sleeping, keeps both: 52 ms quiet, as PASSIVE when shared. GOMP_SPINCOUNT overrides OMP_WAIT_POLICY.
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
