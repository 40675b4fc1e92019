# FactorVAE replication. `make help` lists the targets.
# Data location: QLIB_DATA (a Qlib provider directory or a pack file made by `make pack`).
QLIB_DATA ?= $(HOME)/.qlib/qlib_data/cn_data
export QLIB_DATA
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PACK ?= cache/cn_data.pack
UNIVERSE ?= csi300
EPOCHS ?= 100
DEVICE ?= auto
TRAIN ?= True
BACKTEST ?= True
LANES ?= 1
BENCH_MODELS ?= factorvae gru
SMOKE_PARAMS = -p smoke True -p epochs 1 -y "seeds: [0]"
NB_RUN = $(VENV)/bin/jupytext --to ipynb notebooks/$(1).py -o cache/$(1).ipynb -q && \
	$(VENV)/bin/papermill --cwd . cache/$(1).ipynb $(2) $(3)

HELDOUT ?= 50 100 200
SLOT ?= 540
GPU_LANES ?= 4
SMOKE_HELDOUT = -y "heldout: [10, 40]"

.PHONY: help setup test data pack smoke table1 table2 table3 campaign bench gpu-bundle gpu-slot clean

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

smoke: setup ## the whole pipeline on the synthetic market (minutes, CPU); writes only under cache/smoke
	$(PY) -m replication.synthetic --out cache/synthetic
	$(PY) -m replication.smoke cache/synthetic
	mkdir -p cache/smoke
	$(call NB_RUN,table1,cache/smoke/table1.ipynb,$(SMOKE_PARAMS))
	$(call NB_RUN,table2,cache/smoke/table2.ipynb,$(SMOKE_PARAMS) $(SMOKE_HELDOUT))
	$(call NB_RUN,table3,cache/smoke/table3.ipynb,$(SMOKE_PARAMS))

table1: setup ## Table 1 (UNIVERSE=csi300|all, EPOCHS, DEVICE, TRAIN=False: table from existing runs only)
	mkdir -p cache notebooks/executed
	$(call NB_RUN,table1,notebooks/executed/table1.ipynb,-p universe $(UNIVERSE) -p epochs $(EPOCHS) -p device $(DEVICE) -p train $(TRAIN))

table2: setup ## Table 2: every (model, m, seed) with m stocks held out of training (TRAIN=False: table from existing runs only)
	mkdir -p cache notebooks/executed
	$(call NB_RUN,table2,notebooks/executed/table2.ipynb,-p universe $(UNIVERSE) -p epochs $(EPOCHS) -p device $(DEVICE) -p train $(TRAIN))

table3: setup ## Table 3 + Figure 6: backtest every Table 1 run (TRAIN=False: only runs present; BACKTEST=False: from backtest files only)
	mkdir -p cache notebooks/executed
	$(call NB_RUN,table3,notebooks/executed/table3.ipynb,-p universe $(UNIVERSE) -p epochs $(EPOCHS) -p device $(DEVICE) -p train $(TRAIN) -p backtest $(BACKTEST))

campaign: setup ## every missing Table 1 and Table 2 run on LANES worker processes (UNIVERSE, EPOCHS, DEVICE, HELDOUT); rerun to resume
	$(PY) -m replication.campaign --universe $(UNIVERSE) --epochs $(EPOCHS) --device $(DEVICE) --lanes $(LANES)
	$(PY) -m replication.campaign --universe $(UNIVERSE) --epochs $(EPOCHS) --device $(DEVICE) --lanes $(LANES) \
		--heldout $(HELDOUT)

bench: setup ## training throughput and the campaign projection (BENCH_MODELS, UNIVERSE, DEVICE) -> paper_tables/bench/
	$(PY) -m replication.bench --models $(BENCH_MODELS) --universe $(UNIVERSE) --device $(DEVICE)

gpu-bundle: pack ## what a GPU host without network needs, under cache/ (carry cache/cn_data.pack and cache/wheels)
	$(VENV)/bin/pip download -q --no-deps -d cache/wheels tqdm

gpu-slot: ## on a GPU host (system python, no venv): SLOT seconds of the universe-all campaign, the result files packed into OUT/runs.tgz
	$(PYTHON) -c "import tqdm" 2>/dev/null || $(PYTHON) -m pip install -q --no-index cache/wheels/*.whl
	mkdir -p results/runs results/backtests && cp -n paper_tables/runs/*.json results/runs/
	-PYTHONPATH=. timeout $(SLOT) sh -c '$(PYTHON) -m replication.campaign --universe all --device $(DEVICE) \
		--lanes $(GPU_LANES) --provider $(PACK) --out results/runs && \
		$(PYTHON) -m replication.campaign --universe all --device $(DEVICE) --lanes $(GPU_LANES) \
		--provider $(PACK) --out results/runs --heldout $(HELDOUT)'
	tar czf $${OUT:-cache}/runs.tgz -C results runs backtests

clean: ## remove cached datasets, the synthetic market and smoke outputs (keeps .venv and results)
	rm -rf cache/datasets cache/synthetic cache/smoke
