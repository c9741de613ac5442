# robustlens: `make demo` runs the demo study, `make test` runs the test suite.
# Both set up a virtual environment (.venv) and the Fashion-MNIST data first when missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustlens-installed

DOCS_VENV ?= .venv-docs

.PHONY: setup data browser demo test lint docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

data:
	@sh scripts/ensure-data.sh

# headless Chromium for the report's browser test (Debian's `chromium`)
browser:
	@sh scripts/ensure-chromium.sh

demo: setup data
	$(BIN)/robustlens demo

test: setup data browser
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# the documentation site, in its own small venv (the docs tools need no torch)
docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --quiet --site-dir site

$(DOCS_VENV)/.installed: docs/requirements.lock
	@test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r docs/requirements.lock
	@touch $@

bench: setup data
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs site .pytest_cache .mypy_cache .ruff_cache
