# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo demo-train lint bench e2e clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's dependencies changed since the last install.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers, one torch thread each (tests/conftest.py), a test file per worker so its module fixtures
# are built once: 2727 tests in 2 min 47 s - 3 min 20 s on 2 CPU cores (session 45; tests marked slow run in test-all).
TEST_WORKERS ?= -n 2 --dist loadfile

test: $(STAMP)
	$(PY) -m pytest $(TEST_WORKERS)

test-all: $(STAMP)
	$(PY) -m pytest $(TEST_WORKERS) -m ''

lint: $(STAMP)
	$(PY) -m ruff check shared domains apps tests benchmarks

# Serves the Streamlit app on localhost with the shipped demo weights (apps/weights/; no training).
demo: $(STAMP)
	$(PY) apps/prepare_demo.py --serve

# Retrains the demo models locally on the embedded synthetic data (quick configs, about 10 minutes on
# 2 CPU cores, plus about 14 minutes the first time to generate the synthetic sets, the accident clips most
# of it; the pages then prefer
# these checkpoints), then serves the app.
demo-train: $(STAMP)
	$(PY) apps/prepare_demo.py --train --serve

# Browser check: screenshots of every page in headless Chromium (Debian package `chromium`).
e2e: $(STAMP)
	$(PY) apps/prepare_demo.py
	$(PY) apps/e2e.py

bench: $(STAMP)
	$(PY) benchmarks/backbones.py

# Caches only: lightning_logs/ holds your trained checkpoints (and the demo pages' own models) and data/ the
# generated sets, which take minutes to hours to remake; delete those yourself when you mean to.
clean:
	rm -rf .pytest_cache .ruff_cache
	find shared domains apps tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +
