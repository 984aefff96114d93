# minisora: two commands for a newcomer.
#   make demo   trains a tiny model on the CPU and writes videos to outputs/demo/
#   make test   runs the whole test suite (unit tests + notebooks under nbval)
# Both create .venv/ on first use. Override the interpreter or torch pin with
#   make demo PYTHON=python3.12 TORCH="torch"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
# Tests never reach the Hugging Face hub: offline loaders must fail at once, not retry.
TEST_ENV := HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 MINISORA_SMOKE=1 MPLBACKEND=Agg

.PHONY: setup demo test strip-notebooks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m minisora demo

test: setup
	$(TEST_ENV) $(PY) -m pytest -q tests
	$(TEST_ENV) $(PY) -m pytest -q --nbval-lax --nbval-kernel-name python3 notebooks

# Notebooks are committed without outputs, execution counts or widget state (tests/test_project.py checks).
strip-notebooks: setup
	$(PY) -m jupyter nbconvert --clear-output --inplace --log-level=WARN \
		--ClearMetadataPreprocessor.enabled=True notebooks/*.ipynb
	$(PY) tools/notebook_setup.py

clean:
	rm -rf outputs .pytest_cache
