# Two entry points: `make run` (dashboard on the bundled demo) and `make test`.
# Both create .venv and install requirements.txt into it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test screenshots clean-venv

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m streamlit run dashboard/app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: $(VENV)/.installed
	$(PY) -m pytest -q

# refresh the README's screenshots (needs Debian's chromium)
screenshots: $(VENV)/.installed
	MODA_SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest -q -m browser -s

clean-venv:
	rm -rf $(VENV)
