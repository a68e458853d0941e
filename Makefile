# Two entry points: `make run` (dashboard on the bundled demo, on 127.0.0.1 only) and `make test`.
# Both create .venv on first use, install requirements.txt (the pinned development environment) and the
# package itself, editable, into it. `make lint` runs ruff (CI runs it before the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# Where the dashboard listens: empty means $MODA_HOST, else 127.0.0.1 (this machine only).
# `make run HOST=0.0.0.0` opens it to the network (a one-line warning says so). A HOST variable that
# merely comes from the environment (some shells export the machine's name as HOST) is ignored.
ifeq ($(origin HOST),environment)
HOST :=
endif
HOST ?=
# Runs folders visitors may look at (separated by ":"); empty: $MODA_RUNS_DIR, else assets/demo and runs/
RUNS_DIR ?=

.PHONY: run test lint screenshots clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# the same server as the installed `moda-studio` command, with the same flags
run: $(VENV)/.installed
	$(VENV)/bin/moda-studio --port $(PORT)$(if $(strip $(HOST)), --host $(HOST))$(foreach dir,$(subst :, ,$(RUNS_DIR)), --runs-dir $(dir))

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# refresh the README's screenshots (needs Debian's chromium)
screenshots: $(VENV)/.installed
	MODA_SCREENSHOTS_DIR=docs/screenshots MODA_COMPARE_CSV=assets/results/compare.csv $(PY) -m pytest -q -m browser -s

clean-venv:
	rm -rf $(VENV)
