# Community data lake — the commands people and CI use.
#   make run    set up everything and run the whole pipeline through Airflow on the demo district
#   make test   set up and run the test suite
#   make up     Airflow UI (localhost:8080) + scheduler + dag-processor + the source simulator
#   make lint   ruff + sqlfluff
#   make bench  throughput and peak memory per source at two district sizes (bench/results/)
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
RESIDENTS ?= 2000
SCALES ?= 2000,10000

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS := True
export GX_ANALYTICS_ENABLED := False
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup run up test lint format clean bench

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	$(PY) -m ingest setup
	@touch $@

# pyCANON (k-anonymity checks in the tests) pins numpy/pandas exactly, so it lives in its own venv.
ANON_VENV := $(CURDIR)/.venv-anon
$(ANON_VENV)/.synced: tests/anonymity/requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python 3.11 $(ANON_VENV)
	$(UV) pip install --quiet --python $(ANON_VENV)/bin/python -r tests/anonymity/requirements.txt
	@touch $@

setup: $(VENV)/.synced $(ANON_VENV)/.synced

run: setup
	$(PY) -m ingest demo --residents $(RESIDENTS)

up: setup
	$(PY) -m ingest.local_airflow up

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench/sources.py --scales $(SCALES)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/sqlfluff lint dbt_project/models

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf data .airflow dbt_project/target dbt_project/logs
