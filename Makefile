# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs on its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/idproxy demo

test: $(STAMP)
	$(BIN)/ruff check idproxy_stream tests bench jobs
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check idproxy_stream tests bench jobs
	$(BIN)/ruff format --check idproxy_stream tests bench jobs

format: $(STAMP)
	$(BIN)/ruff format idproxy_stream tests bench jobs
	$(BIN)/ruff check --fix idproxy_stream tests bench jobs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
