# Two commands do everything: `make run` (the whole stack) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install run test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,otel]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Temporal dev server + UI (:8233), embedded Postgres, migrations, worker, API (:8000), sweep schedule.
run: install
	$(BIN)/escalations dev $(ARGS)

## The whole suite against a real Temporal dev server and a real PostgreSQL.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The blog's example, narrated, against a running `make run`.
demo: install
	$(BIN)/escalations demo

## Benchmarks (not part of `make test`); writes bench/results/*.json.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,otel,bench]'
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
