# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: run test demo assets lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e . --config-settings editable_mode=compat
	@touch $@

$(TEST_INSTALLED): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]' --config-settings editable_mode=compat
	@touch $@ $(INSTALLED)

## make run: install, migrate the local SQLite database, and start the app
run: $(INSTALLED)
	$(BIN)/consent db upgrade
	$(BIN)/consent run

## make demo: load demo panels, workshops and people into the local database
demo: $(INSTALLED)
	$(BIN)/consent db upgrade
	$(BIN)/consent demo

## make test: install test dependencies, check style, and run the whole suite
test: $(TEST_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

## make assets: rebuild consent/static from the npm packages in package.json (needs npm)
assets:
	./scripts/build-assets.sh

lint: $(TEST_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TEST_INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
