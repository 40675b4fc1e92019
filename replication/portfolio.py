"""Table 3's cells: one backtest result file per (Table 1 run, strategy).

A cell backtests a finished run's test predictions (``run.predictions``) with
:func:`replication.backtest.topk_drop` over the test period and writes
``<out>/<run id>-<strategy>.json``: the backtest settings, the risk analysis of the
excess return with and without cost and of the absolute return, the daily series
(return, cost, benchmark, turnover, names held) for Figure 6, and provenance. A cell
whose file exists with the same run, strategy and settings is not recomputed, so
Table 3 can be rebuilt from the committed files on a machine without predictions.

Strategies:

- ``topk``: TopK-Drop ranked by mu_pred (every model; FactorVAE's eq. 19 mean).
- ``tdrisk``: the paper's TDrisk, ranked by mu_pred - eta * sigma_pred (FactorVAE).
  eta is chosen on the **validation** period only (2018): each eta of ``ETA_GRID`` is
  backtested on the run's validation predictions and the highest information ratio
  (the paper's SR) of the excess return with cost wins, the smaller eta on a tie, so
  eta = 0 (plain TopK-Drop) stays possible. The paper gives neither eta nor how it was
  chosen. The grid spans the scale of the two terms: on CSI300 the cross-sectional
  standard deviations of FactorVAE's mu_pred and sigma_pred are both about 0.1-0.12
  (CSRankNorm label units), so eta = 1 weighs risk as much as return.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from replication import run
from replication.backtest import BacktestConfig, analysis, quotes, signal, topk_drop
from replication.data.dataset import DataConfig
from replication.data.provider import Market
from replication.files import ROOT, git_commit, write_atomic

STRATEGIES = ("topk", "tdrisk")
ETA_GRID = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)  # see the module docstring
SERIES = ("return", "cost", "bench", "turnover", "n_held")


def strategies(model: str) -> tuple[str, ...]:
    """The strategies Table 3 backtests a run of ``model`` with: TDrisk is FactorVAE's."""
    return STRATEGIES if model == "factorvae" else ("topk",)


def _spec(result: dict, strategy: str, config: BacktestConfig, eta_grid) -> dict:
    """What a cell's file must match to be reused."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return json.loads(json.dumps({
        "run_id": result["run_id"], "model": result["config"]["model"],
        "seed": result["config"]["seed"], "strategy": strategy, "backtest": asdict(config),
        "eta_grid": list(eta_grid) if strategy == "tdrisk" else None}))


def _scores(preds: dict, eta: float) -> np.ndarray:
    return preds["mu"] - eta * preds["sigma"] if eta else preds["mu"]


def choose_eta(preds: dict, q, config: BacktestConfig, eta_grid=ETA_GRID) -> tuple[float, list[dict]]:
    """The eta of ``eta_grid`` with the best validation information ratio of the excess
    return with cost (ties: the smaller eta); also every eta's validation metrics."""
    rows = []
    for eta in eta_grid:
        report = topk_drop(q, signal(q, preds["date"], preds["instrument"], _scores(preds, eta)),
                           config).report
        rows.append({"eta": eta, **analysis(report)["excess_with_cost"]})
    best = max(rows, key=lambda r: (r["information_ratio"], -r["eta"]))
    return best["eta"], rows


def cell(result: dict, strategy: str = "topk", market: Market | None = None,
         results=ROOT / "results", out=ROOT / "paper_tables" / "backtests",
         config: BacktestConfig = BacktestConfig(), eta_grid=ETA_GRID) -> dict | None:
    """The backtest of Table 1 run ``result`` with ``strategy``: read from its file, else
    computed (needs ``market`` and the run's predictions in ``results``); None when the
    file is missing and ``market`` is None (tables built from committed files only)."""
    spec = _spec(result, strategy, config, eta_grid)
    path = Path(out) / f"{result['run_id']}-{strategy}.json"
    try:
        done = json.loads(path.read_text())
        if {k: done.get(k) for k in spec} == spec:
            return done
    except (OSError, ValueError):
        pass
    if market is None:
        return None
    t0 = time.time()
    data = DataConfig.make(**result["config"]["data"])
    test = run.predictions(result["config"], "test", results, market=market)
    eta, selection = None, None  # topk: ranked by mu_pred alone
    if strategy == "tdrisk":
        valid = run.predictions(result["config"], "valid", results, market=market)
        eta, selection = choose_eta(valid, quotes(market, *data.valid, config), config, eta_grid)
    q = quotes(market, *data.test, config)
    bt = topk_drop(q, signal(q, test["date"], test["instrument"], _scores(test, eta)), config)
    digest = hashlib.blake2b(digest_size=8)
    for k in ("mu", "sigma"):
        digest.update(np.ascontiguousarray(test[k]).tobytes())
    r = bt.report
    out_json = {
        **spec, "eta": eta, "eta_selection": selection, "window": list(data.test),
        "metrics": analysis(r),
        "daily": {"dates": r.index.strftime("%Y-%m-%d").tolist(),
                  **{c: [float(f"{v:.10g}") for v in r[c]] for c in SERIES}},
        "predictions_digest": digest.hexdigest(), "git_commit": git_commit(),
        "data_fingerprint": market.fingerprint(), "data_source": str(market.source),
        "seconds": round(time.time() - t0, 1),
    }
    write_atomic(path, (json.dumps(out_json, indent=1) + "\n").encode())
    return out_json
