# Two commands set up a fresh machine:
#   make run    run the exporter on this host with the default profile
#   make test   run every check and test (lint, format, types, unit, golden, promtool, e2e)
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint generate check-generated clean

$(BIN)/nodeslo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,pack]'
	touch $@

run: $(BIN)/nodeslo
	$(BIN)/nodeslo serve $(ARGS)

lint: $(BIN)/nodeslo
	$(BIN)/ruff check exporter tests benchmarks
	$(BIN)/ruff format --check exporter tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest $(ARGS)

# Rules, dashboards and manifests from the profile (PROFILE=site.yaml for a site's own).
generate: $(BIN)/nodeslo
	$(BIN)/nodeslo generate $(if $(PROFILE),--profile $(PROFILE))

check-generated: $(BIN)/nodeslo
	$(BIN)/nodeslo generate --check $(if $(PROFILE),--profile $(PROFILE))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
