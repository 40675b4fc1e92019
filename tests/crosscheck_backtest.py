"""Our TopK-Drop backtest against real Qlib's, on the same predictions and data.

    PYTHONPATH=. QLIB_ENV/bin/python tests/crosscheck_backtest.py \
        --provider ../shared/data/cn_data --out data/qlib_backtest_crosscheck.json

Runs Qlib's ``TopkDropoutStrategy`` + ``SimulatorExecutor`` + ``Exchange`` (k = 50,
n = 5, deal price close, costs 0.0005 / 0.0015, min cost 5, 1e8 CNY) and
:func:`replication.backtest.topk_drop` on the committed FactorVAE seed-0 test
predictions (CSI300 members), and compares the daily reports and the risk metrics.

Two adaptations tell Qlib what this data snapshot means (they are the data's
conventions, not choices of the backtest): ``$change`` is stored in percent, so the
9.5% limit is the expression ``Abs($change) >= 9.5`` rather than Qlib's float 0.095
(which assumes a fraction); and suspended days are stored as the previous close with
volume 0 (not NaN), so a zero volume is added to both limit expressions. pyqlib is
never a dependency of the package; ``tests/test_qlib_crosscheck.py`` runs this when
it is importable.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from replication.backtest import BacktestConfig, analysis, quotes, signal, topk_drop  # noqa: E402
from replication.data import load_market  # noqa: E402

COLUMNS = ("return", "cost", "bench", "turnover")


def predictions() -> tuple[Path, dict]:
    path = next((ROOT / "paper_tables" / "predictions").glob("factorvae-csi300-seed0-*.npz"))
    return path, dict(np.load(path))


def qlib_report(provider: str, pred: pd.Series, start: str, end: str, cfg: BacktestConfig) -> pd.DataFrame:
    import qlib
    from qlib.backtest import backtest
    from qlib.backtest.executor import SimulatorExecutor
    from qlib.contrib.strategy import TopkDropoutStrategy

    qlib.init(provider_uri=provider, region="cn", logging_level=logging.WARNING)
    # this snapshot: $change in percent; a suspended day has volume 0 (see the docstring)
    blocked = f"Or(Ge(Abs($change), {100 * cfg.limit_threshold:g}), Eq($volume, 0))"
    strategy = TopkDropoutStrategy(signal=pred, topk=cfg.topk, n_drop=cfg.n_drop,
                                   risk_degree=cfg.risk_degree)
    executor = SimulatorExecutor(time_per_step="day", generate_portfolio_metrics=True)
    metrics, _ = backtest(
        start_time=start, end_time=end, strategy=strategy, executor=executor,
        account=cfg.account, benchmark=cfg.benchmark,
        exchange_kwargs={"freq": "day", "deal_price": "close", "open_cost": cfg.open_cost,
                         "close_cost": cfg.close_cost, "min_cost": cfg.min_cost,
                         "trade_unit": cfg.trade_unit, "limit_threshold": (blocked, blocked)})
    report, _ = metrics["1day"]
    return report


def run(provider: str, start: str = "2019-01-01", end: str = "2020-12-31") -> dict:
    cfg = BacktestConfig()
    path, z = predictions()
    t0 = time.time()
    market = load_market(provider)
    q = quotes(market, start, end, cfg)
    ours = topk_drop(q, signal(q, z["date"], z["instrument"], z["mu"]), cfg).report
    t_ours = time.time() - t0
    pred = pd.Series(z["mu"].astype(np.float64), name="score", index=pd.MultiIndex.from_arrays(
        [pd.to_datetime(z["date"]), z["instrument"]], names=["datetime", "instrument"]))
    t0 = time.time()
    theirs = qlib_report(provider, pred, start, end, cfg)
    t_qlib = time.time() - t0
    theirs.index = pd.DatetimeIndex(theirs.index).normalize()
    common = ours.index.intersection(theirs.index)
    out = {"predictions": path.name, "start": start, "end": end, "days_ours": len(ours),
           "days_qlib": len(theirs), "days_compared": len(common),
           "seconds_ours_incl_data": round(t_ours, 1), "seconds_qlib": round(t_qlib, 1),
           "max_abs_diff": {c: float((ours.loc[common, c] - theirs.loc[common, c]).abs().max())
                            for c in COLUMNS},
           "account_value_max_rel_diff": float(
               (ours.loc[common, "value"] / theirs.loc[common, "account"] - 1).abs().max()),
           "ours": analysis(ours.loc[common]), "qlib": analysis(theirs.loc[common])}
    import qlib

    from replication.files import git_commit

    out.update(qlib_version=qlib.__version__, git_commit=git_commit(),
               data_fingerprint=market.fingerprint())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", default=os.environ.get("QLIB_DATA", "~/.qlib/qlib_data/cn_data"))
    ap.add_argument("--out", help="write the JSON summary here")
    a = ap.parse_args(argv)
    s = run(os.path.expanduser(a.provider))
    print(json.dumps(s, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(s, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
