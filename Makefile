# Two entry points for a fresh machine:  `make demo` (the embedded default sweep) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# Ray 2.60 turns token authentication on by default; everything here talks over loopback only.
export RAY_AUTH_MODE ?= disabled
export RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S ?= 30

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e ".[test]"
	touch $@

demo: setup
	$(BIN)/idensenet sweep

test: setup
	$(BIN)/pytest -q -rs

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
