# Bootstraps .venv from nothing but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test lint typecheck unit demo bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check leadrelay tests benchmarks
	$(BIN)/ruff format --check leadrelay tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict leadrelay

unit: $(STAMP)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/leadrelay demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The model-based sync test for minutes (LEADRELAY_SOAK_SECONDS, default 300).
soak: $(STAMP)
	$(BIN)/python -m tests.sync.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
