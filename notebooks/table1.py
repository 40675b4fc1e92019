# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Table 1 — cross-sectional return prediction (Rank IC, Rank ICIR)
#
# Runs every missing (model, seed) through `replication.run` (one result file each,
# skipped when it already exists), then assembles the table beside the paper's numbers.
# `smoke = True` runs the same pipeline on the synthetic market with a few epochs and
# writes under `cache/smoke/`, never over real results.

# %% tags=["parameters"]
models = ["factorvae", "factorvae-prior"]
seeds = [0, 1, 2, 3, 4]
universe = "csi300"  # the paper's is "all" (GPU); "csi300" fits a CPU
epochs = 100  # max epochs; early stopping on the validation Rank IC ends runs sooner
device = "auto"
provider = None  # Qlib provider directory or pack file; None: $QLIB_DATA
smoke = False
train = True  # False: build the table from the result files present, train nothing
out = "paper_tables"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from replication import run, synthetic, tables
from replication.data import load_market
from replication.data.dataset import DataConfig

root = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
if smoke:
    out = "cache/smoke/paper_tables"
    provider = synthetic.write_market(root / "cache" / "synthetic")
    data = DataConfig.make(universe=universe, **synthetic.split())
else:
    data = DataConfig(universe=universe)
out = root / out
results_dir = root / ("cache/smoke/results" if smoke else "results")
market = load_market(provider) if train else None  # rebuilding the table needs no data
configs = [run.run_config(m, s, data, {}, {"max_epochs": epochs}) for m in models for s in seeds]

# %%
if train:
    results = [run.execute(c, provider, device, out / "runs", results_dir, market=market)
               for c in tqdm(configs, desc="runs")]
else:
    found = {run.run_id(c): run.finished(out / "runs" / f"{run.run_id(c)}.json", c) for c in configs}
    results = [r for r in found.values() if r is not None]
    print("missing runs (not trained, train=False):", [k for k, r in found.items() if r is None] or "none")
    if not results:
        raise FileNotFoundError(f"no result files for these runs in {out / 'runs'}: run with train=True")

# %%
df = tables.table1(results)
prov = tables.provenance(results)
title = "Table 1 (smoke: synthetic market)" if smoke else f"Table 1 — universe {universe}"
tables.write_table(df, prov, out, "table1", title)
print(prov)
df

# %% [markdown]
# Daily test Rank IC, cumulated, one line per run.

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for r in results:
    ic = pd.Series(r["test_daily_rank_ic"]["values"], dtype=float,
                   index=pd.to_datetime(r["test_daily_rank_ic"]["dates"]))
    ax.plot(ic.fillna(0).cumsum(), label=f"{r['config']['model']} s{r['config']['seed']}", lw=1)
ax.set_ylabel("cumulative daily Rank IC")
ax.legend(ncol=2, fontsize=7)
fig.tight_layout()
fig.savefig(out / "table1_cumulative_rank_ic.png", dpi=120)
