# Quick start: `make demo` and `make test` set up .venv (pinned, CPU torch) and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
BASE := $(VENV)/.installed-base
TEST := $(VENV)/.installed-test
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-all lock clean

$(BASE): pyproject.toml requirements/base.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements/base.txt
	$(PIP) install --no-deps -e .
	touch $@

$(TEST): $(BASE) requirements/test.txt
	$(PIP) install -r requirements/test.txt
	touch $@

setup: $(BASE)

demo: $(BASE)
	$(BIN)/regionedit demo

test: $(TEST)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(TEST)
	$(BIN)/python -m pytest

lock:  # re-pin requirements/base.txt from a fresh resolve of pyproject's dependencies
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip --disable-pip-version-check -q install torch==2.13.0 -e .
	{ head -n 2 requirements/base.txt; .venv-lock/bin/python -m pip freeze --exclude-editable \
		| sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements/base.txt.new
	mv requirements/base.txt.new requirements/base.txt && rm -rf .venv-lock

clean:
	rm -rf $(VENV) demo-output .pytest_cache
