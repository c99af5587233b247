# Set-up and the everyday commands. Every target creates the virtual environment first if needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# The oldest Python pyproject.toml allows, in a venv of its own (`make test-py310`).
VENV310 ?= .venv310
PYTHON310 ?= /root/.pyenv/versions/3.10.13/bin/python
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

.PHONY: install demo test test-py310 docs lint bench clean
install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the main job, offline: bundled real X-rays, teacher, student, distilled student
	$(BIN)/cxrdistill demo

test: $(BIN)/.installed  ## lint, then the whole test suite
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-py310: $(BIN310)/.installed  ## the whole test suite on Python 3.10 (lint is the same as in `make test`)
	$(BIN310)/python -m pytest -q

docs: $(BIN)/.installed  ## the documentation site from docs/ into site/; strict: a broken link or a page missing from the nav fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(BIN)/.installed  ## every benchmark under benchmarks/ (minutes each)
	bash benchmarks/run_all.sh

clean:
	rm -rf runs outputs .cache .pytest_cache site
