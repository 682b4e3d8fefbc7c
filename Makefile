# cell-gateway: `make run` starts the demo cell, `make test` runs every check CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck pytest install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "cell-gateway needs Python 3.11 or newer: PYTHON=python3.11 make ..." >&2; exit 1)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cell-gateway run --config config/cell.toml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis .grimp_cache .import_linter_cache

# A simulated production day with every fault against a gateway started for it (var/demo/): a
# progress bar, then the summary and the reconciliation with the gateway's database. docs/simulator.md
DEMO_ARGS ?= --hours 24 --speed 3600 --faults all --seed 7

.PHONY: demo bench

demo: $(STAMP)
	$(BIN)/cell-gateway simulate --config config/cell.toml --spawn --workdir var/demo $(DEMO_ARGS)

# The gateway against a bare asyncua server with 1, 10 and 50 PLC processes, and its memory over 1M
# reports: bench/results/latest.md. Not part of `make test`. BENCH_ARGS=--help for the options.
BENCH_ARGS ?=

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)
