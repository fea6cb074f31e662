# llava_nb: the two fresh-machine commands are `make quickstart` and `make test`.
# Both create the virtual environment first (tools/install.sh) if it is missing or out of date;
# `make test` also installs Chromium for the browser tests if it is missing (tools/install_browser.sh), and the reference
# LLaVA (llava-torch 1.2.2.post1, transformers 4.37.2) in its own environment .reference for the interop tests (tools/reference_env.sh).
# `make test-scale` runs the vLLM integration tests (tests_scale/), building vLLM's CPU build in .vllm first (tools/vllm_env.sh).
VENV ?= .venv
VLLM_ENV ?= .vllm
STAMP := $(VENV)/.llava_nb-installed
PYTEST_WORKERS ?= 2

.PHONY: install browser reference vllm-env quickstart test test-scale readme

$(STAMP): settings.ini setup.py tools/install.sh
	LLAVA_NB_VENV=$(VENV) bash tools/install.sh
	touch $(STAMP)

install: $(STAMP)

browser:
	bash tools/install_browser.sh

reference:
	bash tools/reference_env.sh

vllm-env:
	LLAVA_NB_VLLM=$(VLLM_ENV) bash tools/vllm_env.sh

quickstart: $(STAMP)
	$(VENV)/bin/llava_quickstart

test: $(STAMP) browser reference
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS)

test-scale: $(STAMP) reference vllm-env
	LLAVA_NB_VLLM=$(VLLM_ENV) $(VENV)/bin/python -m pytest tests_scale -v -s

readme:
	$(VENV)/bin/python tools/make_readme.py
