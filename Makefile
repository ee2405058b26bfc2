# Two commands for a newcomer: `make demo` and `make test`. Both install what they need first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
K2_WHEELHOUSE ?= $(abspath ../shared/wheels)
STAMP := $(VENV)/.w2v-installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k lang -x"`.
PYTEST_ARGS ?=

.PHONY: install demo test clean-demo

install: $(STAMP)

# Re-runs only when a pin changes; each step is itself idempotent.
$(STAMP): requirements.txt requirements-test.txt pyproject.toml tools/install_k2.sh
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"w2v-k2 needs Python 3.11, $(VENV) has {sys.version}"'
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	K2_WHEELHOUSE=$(K2_WHEELHOUSE) PYTHON=$(PY) tools/install_k2.sh
	@touch $@

demo: install
	cd egs/librispeech && PATH=$(abspath $(VENV))/bin:$$PATH ./run.sh

test: install
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q $(PYTEST_ARGS) tests
