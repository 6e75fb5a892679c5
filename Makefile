# The two commands of the README:
#   make demo   build the environment (first time) and run the main job on a small default
#   make test   build the environment (first time) and run the test suite
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
DEMO_OUT  ?= runs/demo

.PHONY: demo test lint env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 not found"; exit 1; }
	@python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' || \
	  { echo "need Python >= 3.12 (this repo's .python-version asks pyenv for 3.12)"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pdegrow demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check pdegrow solvers tests benchmarks

clean:
	rm -rf $(VENV) runs
