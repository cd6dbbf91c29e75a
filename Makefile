# riskroute: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data

.PHONY: run test install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/riskroute run --data-dir $(DATA)

test: $(STAMP)
	$(BIN)/ruff check features training rules approvals serving tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/history.py
	$(BIN)/python benchmarks/training.py --dask
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/backtest.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
