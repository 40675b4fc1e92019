# FactorVAE replication. `make help` lists the targets.
# Data location: QLIB_DATA (a Qlib provider directory or a pack file made by `make pack`).
QLIB_DATA ?= $(HOME)/.qlib/qlib_data/cn_data
export QLIB_DATA
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PACK ?= cache/cn_data.pack

.PHONY: help setup test data pack smoke clean

help: ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[test,notebooks]"
	touch $@

setup: $(VENV)/.installed ## create .venv with the package, torch and the test/notebook tools

test: setup ## run the test suite (real-data tests need ../shared/data/cn_data or REPLICATION_REAL_DATA)
	$(PY) -m pytest -q

data: setup ## build and cache the day cross-section datasets (universes all and csi300) from QLIB_DATA
	$(PY) -m replication.data info
	$(PY) -m replication.data build --universe csi300
	$(PY) -m replication.data build --universe all

pack: setup ## write the compact market pack for GPU hosts ($(PACK)) from QLIB_DATA
	$(PY) -m replication.data pack --out $(PACK)

smoke: setup ## generate the synthetic market and build its datasets (seconds)
	$(PY) -m replication.synthetic --out cache/synthetic
	$(PY) -m replication.smoke cache/synthetic

clean: ## remove cached datasets and the synthetic market (keeps .venv)
	rm -rf cache/datasets cache/synthetic
