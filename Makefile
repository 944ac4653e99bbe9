# Quick start: `make demo` and `make test` set up .venv (pinned, CPU torch) and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
BASE := $(VENV)/.installed-base
APP := $(VENV)/.installed-app
TEST := $(VENV)/.installed-test
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup demo serve test test-all lock clean

$(BASE): pyproject.toml requirements/base.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements/base.txt
	$(PIP) install --no-deps -e .
	touch $@

$(APP): $(BASE) requirements/app.txt
	$(PIP) install -r requirements/app.txt
	touch $@

$(TEST): $(APP) requirements/test.txt
	$(PIP) install -r requirements/test.txt
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	touch $@

setup: $(BASE)

demo: $(BASE)
	$(BIN)/regionedit demo

serve: $(APP)
	$(BIN)/regionedit serve

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
