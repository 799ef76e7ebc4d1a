# MedPortal: `make run` serves the demo, `make test` runs every check.
# Both create the virtual environment and install what is needed first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test lint format install browser lock manage clean-var help

help:
	@echo "make run    - install, start embedded PostgreSQL/Redis (unless DATABASE_URL/REDIS_URL), migrate, seed, serve"
	@echo "make test   - install, ruff check, the whole pytest suite (browser tests included)"
	@echo "make manage ARGS='list_tenants' - a manage.py command against the same services as make run"

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "MedPortal needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m medportal.devstack run

# Debian's Chromium for the browser tests (Playwright never downloads its own here).
browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	echo "Chromium is missing at $(CHROMIUM); installing Debian's chromium package..."; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	if [ "$$SUDO" != none ] && command -v apt-get >/dev/null && \
	   $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; then \
	  echo "Installed $$($(CHROMIUM) --version)."; \
	else \
	  echo "Could not install Chromium (needs apt-get and root). Install it yourself, e.g." \
	       "'sudo apt-get install chromium', or set CHROMIUM to its path. Browser tests will not run." >&2; \
	fi

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

test: install browser lint
	MEDPORTAL_CHROMIUM=$(CHROMIUM) $(PY) -m medportal.devstack exec --prefer-local -- \
	  $(PY) -m pytest $(PYTEST_ARGS)

manage: install
	$(PY) -m medportal.devstack exec --demo-secrets -- $(PY) manage.py $(ARGS)

lock: install
	$(PY) -m pip install --quiet -r requirements.in
	{ echo "# Every version pinned; generated from requirements.in by \`make lock\`."; \
	  $(PY) -m pip freeze; } > requirements.txt

clean-var:
	rm -rf var
