# Two entry points: `make run` (dashboard on the bundled demo, on 127.0.0.1 only) and `make test`.
# Both create .venv on first use, install requirements.txt (the pinned development environment) and the
# package itself, editable, into it. `make lint` runs ruff and `make typecheck` mypy (CI runs both before the tests).
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
# one --runs-dir 'FOLDER' per folder of RUNS_DIR: split on ":" only (a folder may hold spaces; they stand in
# as RUNS_DIR_SPACE while make splits), each folder quoted for the shell
empty :=
space := $(empty) $(empty)
RUNS_DIR_SPACE := |runs-dir-space|
runs_dir_words = $(subst :, ,$(subst $(space),$(RUNS_DIR_SPACE),$(RUNS_DIR)))
runs_dir_flags = $(foreach dir,$(runs_dir_words),--runs-dir '$(subst $(RUNS_DIR_SPACE),$(space),$(subst ','\'',$(dir)))')

.PHONY: run test test-all lint typecheck screenshots clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# the same server as the installed `moda-studio` command, with the same flags
run: $(VENV)/.installed
	$(VENV)/bin/moda-studio --port $(PORT)$(if $(strip $(HOST)), --host $(HOST))$(if $(runs_dir_flags), $(runs_dir_flags))

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not long"

# also the minutes-long checks (every page at three window sizes, Back/Forward, full-size torchvision models)
test-all: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# mypy on moda_core, every function annotated (settings: pyproject.toml's [tool.mypy])
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# refresh the README's screenshots (needs Debian's chromium)
screenshots: $(VENV)/.installed
	MODA_SCREENSHOTS_DIR=docs/screenshots MODA_COMPARE_CSV=assets/results/compare.csv $(PY) -m pytest -q tests/test_browser.py -s

clean-venv:
	rm -rf $(VENV)
