# llava_nb: the two fresh-machine commands are `make quickstart` and `make test`.
# Both create the virtual environment first (tools/install.sh) if it is missing or out of date;
# `make test` also installs Chromium for the browser tests if it is missing (tools/install_browser.sh).
VENV ?= .venv
STAMP := $(VENV)/.llava_nb-installed
PYTEST_WORKERS ?= 2

.PHONY: install browser quickstart test readme

$(STAMP): settings.ini setup.py tools/install.sh
	LLAVA_NB_VENV=$(VENV) bash tools/install.sh
	touch $(STAMP)

install: $(STAMP)

browser:
	bash tools/install_browser.sh

quickstart: $(STAMP)
	$(VENV)/bin/llava_quickstart

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS)

readme:
	$(VENV)/bin/python tools/make_readme.py
