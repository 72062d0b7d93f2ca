# Two commands set up a fresh machine:
#   make run    run the exporter on this host with the default profile
#   make test   run every check and test (lint, format, types, unit, golden, promtool, e2e)
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint generate check-generated deb man clean

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

# The Debian package, nodeslo_<version>_all.deb in build/deb/, built out of tree from a
# copy of the checkout (tracked and new files, not ignored ones) by dpkg-buildpackage:
# no root needed, only the Build-Depends of debian/control (.ci/run installs them) and
# PyPI for the private virtualenv's packages.
VERSION   = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' exporter/nodeslo/__init__.py)
DEB_BUILD = build/deb
deb:
	rm -rf $(DEB_BUILD) && mkdir -p $(DEB_BUILD)/nodeslo-$(VERSION)
	git ls-files -z --cached --others --exclude-standard | \
	    tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(DEB_BUILD)/nodeslo-$(VERSION)
	cd $(DEB_BUILD)/nodeslo-$(VERSION) && dpkg-buildpackage -b -us -uc --no-sign
	lintian --fail-on error,warning --info $(DEB_BUILD)/nodeslo_$(VERSION)_all.deb

# nodeslo(1) from the argument parser, to read without building the package.
man: $(BIN)/nodeslo
	mkdir -p build && $(BIN)/python -m nodeslo.manpage >build/nodeslo.1
	man -l build/nodeslo.1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
