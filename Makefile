# Sightline: `make demo` and `make test` work on a fresh machine (Python >= 3.10, make).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install system-deps demo up test test-fast bench soak clean lock

# Prometheus and Alertmanager (with promtool and amtool) come from Debian's packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null; then \
		echo "==> prometheus and alertmanager already installed"; \
	else \
		echo "==> installing prometheus and prometheus-alertmanager (apt-get)"; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y prometheus prometheus-alertmanager; \
	fi

$(STAMP): pyproject.toml requirements.lock | system-deps
	@echo "==> creating $(VENV) and installing Sightline with the versions of requirements.lock"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c requirements.lock torch==2.13.0
	$(PY) -m pip install -c requirements.lock -e '.[test]'
	touch $@

# Re-resolve every dependency from nothing (after a change to pyproject.toml) and write
# requirements.lock from what was installed.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install torch==2.13.0
	$(LOCK_VENV)/bin/python -m pip install -e '.[test]'
	$(LOCK_VENV)/bin/python tools/lock.py
	rm -rf $(LOCK_VENV)

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

soak: $(STAMP)
	$(PY) bench/soak.py

clean:
	rm -rf .sightline .pytest_cache
