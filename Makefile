# Two entry points (README): `make run` trains the quickstart model, `make test` runs the tests.
# Both create .venv on first use: torch is pinned to the CPU build first so that the extras
# resolve against it instead of pulling a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup run test test-fast lint bench-cpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The main job: the quickstart (a task where time matters, CPU, about a minute of training), then
# its test accuracy beside the best baselines without and with the times. The run always goes to
# runs/quickstart/version_0 (replaced on every `make run`), where the README's next commands
# look for it.
run: setup
	rm -rf runs/quickstart/version_0
	$(VENV)/bin/eventssm fit --config experiments/configs/quickstart.yaml --trainer.logger.init_args.version 0
	$(PY) experiments/yardsticks.py --config experiments/configs/quickstart.yaml --seeds 0 \
		--ckpt runs/quickstart/version_0/checkpoints/last.ckpt

# Everything CI runs: unit and slow tests, then the Triton kernels under the CPU interpreter in
# their own processes (TRITON_INTERPRET must be set before triton decorates a kernel).
test: setup
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not interpret"
	TRITON_INTERPRET=1 $(PY) -m pytest -n 2 -q -m interpret

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not interpret"

lint: setup
	$(VENV)/bin/ruff check eventssm kernels datasets tests experiments

bench-cpu: setup
	$(PY) experiments/bench/cpu_scan.py
