# WhatsApp multi-instance API: one Makefile for the whole workspace.
# `make run` and `make test` are the two commands a new user types (README).

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
SERVICES := wa_auth wa_session_worker wa_webhooks wa_stats

# Embedded defaults for `make run`: SQLite files under data/, the simulator engine, local RabbitMQ.
export WA_PROFILE ?= embedded
export WA_ENGINE ?= simulator
export LOG_FORMAT ?= console
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/
ADMIN_EMAIL ?= admin@example.com
ADMIN_PASSWORD ?= admin123
GATEWAY_PORT ?= 8080

.PHONY: help install run migrate test test-unit lint fmt bench demo clean

help:
	@echo "make run      start the whole system on loopback (embedded defaults)"
	@echo "make test     the whole test suite (needs local RabbitMQ and PostgreSQL)"
	@echo "make lint     ruff + mypy on the whole tree"
	@echo "make migrate  upgrade every service's store"
	@echo "make bench    pipeline benchmark (newest results first in bench/RESULTS.md)"

# uv is the workspace manager; install it into .tools/ when the machine has none.
$(UV):
	@python3 -m pip install --quiet --target .tools/uv-pkg uv && mkdir -p .tools/bin && ln -sf ../uv-pkg/bin/uv .tools/bin/uv

.venv/.synced: uv.lock pyproject.toml $(wildcard services/*/pyproject.toml) libs/common/pyproject.toml | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

install: .venv/.synced

migrate: install
	@for s in $(SERVICES); do echo "migrating $$s"; $(PY) -m $$s migrate || exit 1; done

# The banner (gateway URL, admin credentials) is printed by tools/run_system.py once every
# service answers /readyz; Ctrl-C stops everything and ends without an error line.
run: install
	@$(PY) -m wa_common.preflight
	@$(MAKE) --no-print-directory migrate
	@exec $(PY) tools/run_system.py --admin "$(ADMIN_EMAIL) / $(ADMIN_PASSWORD)"

test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m "not integration and not e2e"

# The tests folders are type-checked as packages (-p), under the dotted names pytest's importlib
# mode gives their modules (services.session-worker.tests.conftest): given as paths, mypy would
# name the modules of a folder under a non-identifier (session-worker, webhook-dispatcher) from
# that folder down, so their conftest.py would clash with the root one. MYPYPATH (the packages'
# source roots) lets the tests see the wa_* packages' real types (the editable installs carry no
# py.typed); errors inside those packages are the first mypy line's to report, hence silent, and
# the other options need their own cache.
empty :=
MYPY_SOURCE_ROOTS := $(subst $(empty) $(empty),:,libs/common $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml)))
MYPY_TEST_PACKAGES := $(subst /,.,$(wildcard libs/common/tests services/*/tests))

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	MYPYPATH=$(MYPY_SOURCE_ROOTS) .venv/bin/mypy libs/common/wa_common services/*/wa_* bench tests tools conftest.py
	MYPYPATH=$(MYPY_SOURCE_ROOTS) .venv/bin/mypy --follow-imports=silent --cache-dir .mypy_cache/tests \
		$(addprefix -p ,$(MYPY_TEST_PACKAGES))

fmt: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# The issue-15 throughput run (about 6 min on 2 cores); BENCH_ARGS="--stores sqlite", "--failover",
# "--no-write" ... (see `python -m bench --help`).
BENCH_ARGS ?= --kill-worker
bench: install
	$(PY) -m bench $(BENCH_ARGS)

demo: install
	$(PY) -m tests.demo

clean:
	rm -rf .venv .tools data .pytest_cache .mypy_cache .ruff_cache
