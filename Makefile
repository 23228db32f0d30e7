# Two entry points for a fresh machine:
#   make quickstart   set up .venv, train and evaluate on the embedded ml-latest-small
#   make test         set up .venv, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recx-installed

.PHONY: setup quickstart test bench clean

setup: $(STAMP)

# The stamp depends on the lock and the project metadata, so editing either
# reinstalls. Everything is installed with --no-deps from the lock: torchrec's
# metadata asks for the CUDA build of fbgemm-gpu, and the lock names the CPU one.
$(STAMP): requirements/lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "recx needs Python >= 3.11, found " + sys.version.split()[0] + ". Run make with PYTHON=/path/to/python3.11 or newer.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

quickstart: setup
	$(BIN)/recx train --output runs/quickstart

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/foundation.py --output benchmarks/results/foundation

clean:
	rm -rf $(VENV) runs .pytest_cache
