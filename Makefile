# Crossdock — `make run` and `make test` set themselves up on a fresh clone.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp
PROTOS := $(shell find proto -name '*.proto' | sort)
GEN    := gen/.stamp
PYTEST_ARGS ?=

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	echo "$(CURDIR)/gen" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/crossdock_gen.pth"
	touch $@

$(GEN): $(STAMP) $(PROTOS) buf.yaml
	$(VENV)/bin/buf lint
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I proto --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch $@

setup: $(GEN) ## create the venv and generate code (done by every target that needs it)

proto: ## regenerate the Python code from proto/ (lint first)
	rm -f $(GEN)
	$(MAKE) $(GEN)

lint: $(GEN) ## buf lint + ruff
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check services gateway tests bench scripts

breaking: $(GEN) ## buf breaking against main
	$(VENV)/bin/buf breaking --against '.git#branch=main'

ERP ?= builtin
PG ?=
PG_PREFIX ?= crossdock
run: $(GEN) ## start the whole mesh, seed it, push a sample workload, keep serving until Ctrl-C (ERP=tryton: on Tryton; PG=postgresql://postgres@127.0.0.1:5432/ : a database per service; TLS=1: mutual TLS between the services)
	$(VENV)/bin/crossdock up --demo 30 --erp $(ERP) $(if $(PG),--postgres '$(PG)' --postgres-prefix $(PG_PREFIX)) $(if $(TLS),--tls)

test: $(GEN) ## unit, integration and end-to-end tests (CI runs this)
	$(VENV)/bin/ruff check services gateway tests bench scripts
	$(VENV)/bin/pytest -q --durations=25 -m "not slow" $(PYTEST_ARGS)

test-unit: $(GEN) ## the fast tiers: unit (no I/O) and use cases (in-process, real SQLite), seconds
	$(VENV)/bin/pytest -q tests/unit tests/usecases

test-slow: $(GEN) ## the tests left out of make test for its time budget (-m slow: bench scenarios 7 and 8, the peers and Tryton)
	$(VENV)/bin/pytest -q -m slow

test-tryton: $(GEN) ## the tests of the Tryton ERP backend only (trytond from a prepared template)
	$(VENV)/bin/pytest -q -m tryton

clean: ## remove the venv, generated code and local data
	rm -rf $(VENV) gen .data

.PHONY: help setup proto lint breaking run test test-unit test-slow test-tryton clean

migration: $(GEN) ## autogenerate a migration: make migration SERVICE=erp MSG="add column"
	$(PY) scripts/new_migration.py $(SERVICE) "$(MSG)"
.PHONY: migration

chaos: $(GEN) ## the full fault-injection run (2,000 orders + 200 returns under faults) and its summary
	$(PY) -m tests.faults.chaos --orders 2000 --returns 200 --erp-outage 30 --json .data/chaos-summary.json
.PHONY: chaos

bench: $(GEN) ## benchmarks side by side (~13 min): .data/bench/results.json, summary.md, chart.png
	$(PY) -m bench --size full --out .data/bench $(BENCH_ARGS)
.PHONY: bench

catalog: $(GEN) ## the event catalog from contracts.py + proto/: docs/catalog/asyncapi.yaml and index.html
	$(PY) -m services.mesh.catalog
.PHONY: catalog

rules: $(GEN) ## the Kubernetes PrometheusRule from deploy/prometheus/crossdock-rules.yaml
	$(PY) -m services.mesh.monitoring rules
.PHONY: rules
