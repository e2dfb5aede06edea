# splitstone: `make run` to try it, `make test` to check everything. `make help` lists the rest.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when pyproject.toml is newer than this stamp (or the venv is new).
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run demo test lint typecheck fmt arch diagram e2e bench bench-events bench-projects bench-split fuzz faults soak clean distclean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP) ## Create .venv and install the package with its dev tools (skipped when up to date)

run: install ## Migrate and serve on http://127.0.0.1:8000 (docs at /docs), SQLite under ./data
	$(BIN)/splitstone db upgrade
	$(BIN)/splitstone serve

test: install ## Lint, format check, types, architecture rules, then the whole suite (SQLite and PostgreSQL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy -p bench
	$(BIN)/splitstone arch check
	$(BIN)/splitstone arch contracts --check
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy (the package and the benchmarks)
	$(BIN)/mypy
	$(BIN)/mypy -p bench

fmt: install ## Format and apply safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

arch: install ## Check the module boundaries, and that the diagram, docs/events.md and docs/modules.md are current
	$(BIN)/splitstone arch check
	$(BIN)/splitstone arch diagram --check
	$(BIN)/splitstone arch events --check
	$(BIN)/splitstone arch contracts --check
	$(BIN)/splitstone arch report --markdown --check

diagram: install ## Regenerate the module diagram (docs/architecture.md), docs/events.md and docs/modules.md
	$(BIN)/splitstone arch diagram
	$(BIN)/splitstone arch events
	$(BIN)/splitstone arch report --markdown

e2e: install ## Black-box scenarios against a real server (tests/e2e)
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

demo: install ## Seed a demo organization into ./data (splitstone demo seed), to look around with make run
	$(BIN)/splitstone db upgrade
	$(BIN)/splitstone demo seed

bench: install ## The API vs a bare baseline, wrk on PostgreSQL; docs/performance.md table (BENCH_ARGS="--quick")
	$(BIN)/python -m bench.api $(BENCH_ARGS)

bench-events: install ## Event pipeline benchmark vs raw nats-py (needs PostgreSQL and NATS)
	$(BIN)/python -m bench.events

bench-projects: install ## Task lists and search at 10k/100k/1M tasks (needs PostgreSQL; BENCH_ARGS="--sizes 10000,100000")
	$(BIN)/python -m bench.projects $(BENCH_ARGS)

bench-split: install ## Remote contract call vs in-process, and monolith vs split throughput (needs NATS; BENCH_ARGS="--quick")
	$(BIN)/python -m bench.split $(BENCH_ARGS)

fuzz: install ## Schemathesis over the whole API: 100 examples, random seed, PostgreSQL and SQLite (FUZZ_MAX_EXAMPLES=..., FUZZ_SEED=<n> replays)
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-100} FUZZ_SEED=$${FUZZ_SEED:-random} FUZZ_BACKENDS=postgres,sqlite \
		$(BIN)/pytest tests/fuzz -p no:cacheprovider -s --timeout=0 $(PYTEST_ARGS)

faults: install ## The mixed workload under faults (worker SIGKILL, NATS restart, PostgreSQL outage), invariants checked
	$(BIN)/python -m tests.faults $(FAULTS_ARGS)

soak: install ## The mixed workload for 10 min on PostgreSQL + NATS: throughput, errors, RSS per process (SOAK_ARGS="--seconds 180")
	$(BIN)/python -m tests.faults --soak $(SOAK_ARGS)

clean: ## Remove caches and build output (keeps .venv and ./data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## Also remove .venv and ./data (the local database and generated secrets)
	rm -rf $(VENV) data
