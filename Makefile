# Set-up and the everyday commands. Every target creates the virtual environment first if needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# The oldest Python pyproject.toml allows, in a venv of its own (`make test-py310`); any Python 3.10 on PATH,
# or name one: `make test-py310 PYTHON310=$$(pyenv root)/versions/3.10.13/bin/python`.
VENV310 ?= .venv310
PYTHON310 ?= python3.10
BIN310 := $(VENV310)/bin

# $(call make-venv,INTERPRETER,VENV): torch and torchvision first, pinned (pip takes these wheels from the
# local disk where they exist), then the package with its extras.
define make-venv
	$(1) -m venv $(2)
	$(2)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(2)/bin/python -m pip install --quiet -e ".[dev,deploy,serve,docs]"
	touch $(2)/bin/.installed
endef

$(BIN)/.installed: pyproject.toml
	$(call make-venv,$(PYTHON),$(VENV))

$(BIN310)/.installed: pyproject.toml
	$(call make-venv,$(PYTHON310),$(VENV310))

.PHONY: install demo test test-fast test-py310 wheel-smoke docs lint bench clean
install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the main job, offline: bundled real X-rays, a teacher, students alone and distilled over 3 seeds
	$(BIN)/cxrdistill demo

test: $(BIN)/.installed  ## lint, then the whole test suite (the full tier, what CI runs)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## lint, then the fast tier: every test that neither trains a model nor runs a whole benchmark (`-m "not slow"`)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-py310: $(BIN310)/.installed  ## the fast tier on Python 3.10 (lint is the same as in `make test`)
	$(BIN310)/python -m pytest -q -m "not slow"

wheel-smoke: $(BIN)/.installed  ## build the wheel, install it into a fresh venv outside the checkout, run it there
	PYTHON=$(BIN)/python bash scripts/wheel_smoke.sh

docs: $(BIN)/.installed  ## the documentation site from docs/ into site/; strict: a broken link or a page missing from the nav fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(BIN)/.installed  ## every benchmark under benchmarks/ (minutes each)
	bash benchmarks/run_all.sh

clean:
	rm -rf runs outputs .cache .pytest_cache site
