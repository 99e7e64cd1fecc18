# Everyday commands. `make` alone lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
STAMP := $(VENV)/.installed
GELOMBANG := $(VENV)/bin/gelombang
# python3.11 where Debian/pyenv has it, else python3 (checked to be >= 3.11 below).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
# What mypy checks: the installed packages, the tests and the benchmarks.
TYPED := gelombang intake queueing database workers config loadtest tests benchmarks
PYTEST_ARGS ?=
# Extra options for `gelombang dev up/run`, e.g. DEV_ARGS='--appendfsync everysec'.
DEV_ARGS ?=
BENCH_ARGS ?=

.PHONY: help sysdeps venv run up down status test lint bench image image-test clean-dev

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

sysdeps: ## install the Debian packages (Redis, PostgreSQL, wrk, nginx, venv, Chromium) that are missing
	bash scripts/install-system-deps.sh

venv: $(STAMP) ## create .venv and install the project with its dev tools

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make venv: no python3 found (make sysdeps)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	    echo "make venv: $(PYTHON) is $$($(PYTHON) -V 2>&1); Gelombang needs Python >= 3.11" >&2; \
	    exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

run: sysdeps venv ## the whole system in the foreground; Ctrl-C stops it
	$(GELOMBANG) dev run $(DEV_ARGS)

up: sysdeps venv ## start the dev stack in the background (Redis :6390, PostgreSQL :5440)
	$(GELOMBANG) dev up $(DEV_ARGS)

down: ## stop what `make up` started
	@if [ -x $(GELOMBANG) ]; then $(GELOMBANG) dev down; else echo "no $(VENV): nothing was started"; fi

status: ## what of the dev stack runs, with ports
	@if [ -x $(GELOMBANG) ]; then $(GELOMBANG) dev status; else echo "no $(VENV): nothing runs"; fi

test: sysdeps venv ## the test suite on real Redis and PostgreSQL (PYTEST_ARGS='-k admission')
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(TYPED)

bench: sysdeps venv ## every benchmark suite, side by side (slow; BENCH_ARGS='door latency')
	$(GELOMBANG) bench $(BENCH_ARGS)

image: sysdeps ## build the container image (podman or docker, no registry: docs/deployment.md)
	bash scripts/build-image.sh

image-test: venv ## run the image's roles against the dev stack (`make up`): migrate, serve, worker store
	bash scripts/image-test.sh

clean-dev: down ## stop the dev stack and delete .dev/ (its data, logs and keys)
	@if [ -x $(GELOMBANG) ]; then $(GELOMBANG) dev clean; fi
	rm -rf .dev
