# The two commands of the README: `make run` and `make test`. Each creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ESPER_RUN_ARGS ?= --task digits --policy ppo --reward-mode simplified --rounds 4 --envs 2 --eval-episodes 4 --out runs/latest

.PHONY: run test lint typecheck schemas install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/esper run $(ESPER_RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check leyline_schemas services tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict leyline_schemas

schemas: $(STAMP)
	$(BIN)/esper schemas export

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
