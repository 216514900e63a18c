# Sightline: `make demo` and `make test` work on a fresh machine (Python >= 3.10, make).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo up test test-fast bench clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing Sightline with its pinned dependencies"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sightline demo

up: $(STAMP)
	$(VENV)/bin/sightline up

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: $(STAMP)
	$(PY) -m pytest -v --durations=15 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/serving.py

clean:
	rm -rf .sightline .pytest_cache
