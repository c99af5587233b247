# Set-up and the everyday commands. Every target creates the virtual environment first if needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned: pip takes these wheels from the local disk where they exist.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev,deploy]"
	touch $@

.PHONY: install demo test lint bench clean
install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the main job, offline: synthetic data, teacher, student, distilled student
	$(BIN)/cxrdistill demo

test: $(BIN)/.installed  ## lint, then the whole test suite
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed  ## every benchmark under benchmarks/ (minutes each)
	bash benchmarks/run_all.sh

clean:
	rm -rf runs outputs .cache .pytest_cache
