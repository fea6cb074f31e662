# llava_nb: the two fresh-machine commands are `make quickstart` and `make test`.
# Both create the virtual environment first (tools/install.sh) if it is missing or out of date;
# `make test` also installs Chromium for the browser tests if it is missing (tools/install_browser.sh), and the reference
# LLaVA (llava-torch 1.2.2.post1, transformers 4.37.2) in its own environment .reference for the interop tests (tools/reference_env.sh).
VENV ?= .venv
STAMP := $(VENV)/.llava_nb-installed
PYTEST_WORKERS ?= 2

.PHONY: install browser reference quickstart test readme

$(STAMP): settings.ini setup.py tools/install.sh
	LLAVA_NB_VENV=$(VENV) bash tools/install.sh
	touch $(STAMP)

install: $(STAMP)

browser:
	bash tools/install_browser.sh

reference:
	bash tools/reference_env.sh

quickstart: $(STAMP)
	$(VENV)/bin/llava_quickstart

test: $(STAMP) browser reference
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS)

readme:
	$(VENV)/bin/python tools/make_readme.py
