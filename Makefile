# Two entry points (README): `make run` trains the quickstart model, `make test` runs the tests.
# Both create .venv on first use with the exact versions of the lock (LOCK, written by `make lock`
# for Python 3.11 on Linux; `make TORCH=torch==2.11.0` swaps only torch). torch is installed
# first so that the extras resolve against it instead of pulling another build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK ?= constraints-py311-linux.txt
TORCH ?= $(shell grep '^torch==' $(LOCK))
LATEST ?= .venv-latest

.PHONY: setup run test test-slow pytest test-fast test-latest lock lint bench-cpu

$(VENV)/.installed: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	grep -v '^torch==' $(LOCK) > $(VENV)/constraints.txt; echo "$(TORCH)" >> $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt "$(TORCH)"
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
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

# The default suite: unit tests, then the Triton kernels under the CPU interpreter in their own
# processes (TRITON_INTERPRET must be set before triton decorates a kernel); the tests marked
# `slow` (end-to-end fits, long fuzzing, the larger kernel grids) are left to `make test-slow`.
# CI runs both.
test: setup
	$(MAKE) --no-print-directory pytest PY=$(PY) MARK="not slow"

test-slow: setup
	$(MAKE) --no-print-directory pytest PY=$(PY) MARK="slow"

# MARK selects within each phase; pytest's exit code 5 (no test selected) is not a failure.
MARK ?= slow or not slow
pytest:
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not interpret and ($(MARK))" || [ $$? -eq 5 ]
	TRITON_INTERPRET=1 $(PY) -m pytest -n 2 -q -m "interpret and ($(MARK))" || [ $$? -eq 5 ]

# Drift on purpose (not run by CI): a fresh venv with the newest versions that pyproject.toml's
# ranges allow (torch stays $(TORCH): the newest in range may be a CUDA build), then the whole
# suite. Run it before `make lock`.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q "$(TORCH)"
	$(LATEST)/bin/python -m pip install -q -e ".[dev]"
	$(MAKE) --no-print-directory pytest PY=$(LATEST)/bin/python

# Refresh the lock from the venv that `make test-latest` built and tested. A local build label
# (torch's +cpu) is dropped: `torch==2.13.0` then admits whichever build the index offers.
lock:
	test -x $(LATEST)/bin/python || { echo "run make test-latest first"; exit 1; }
	{ echo "# Exact versions known to pass make test-latest (Python 3.11, Linux). Refresh: make test-latest && make lock"; \
	  $(LATEST)/bin/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > $(LOCK)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not interpret"

lint: setup
	$(VENV)/bin/ruff check eventssm tests experiments

bench-cpu: setup
	$(PY) experiments/bench/cpu_scan.py
