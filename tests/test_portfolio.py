"""Table 3's cells on the synthetic market: one file per (run, strategy), reused when it
matches; TDrisk's eta chosen on validation predictions only; the table's layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

import replication.portfolio as P
import replication.run as R
from replication.backtest import BacktestConfig, quotes
from replication.data import load_market
from replication.data.dataset import DataConfig
from replication.synthetic import split
from replication.tables import table3

SMALL = BacktestConfig(topk=10, n_drop=2)  # the synthetic index has ~60 members


@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


@pytest.fixture(scope="module")
def trained(market, tmp_path_factory):
    """A one-epoch FactorVAE run with its predictions (test and validation)."""
    tmp = tmp_path_factory.mktemp("portfolio")
    cfg = R.run_config("factorvae", 0, DataConfig.make(universe="csi300", **split()), {},
                       {"max_epochs": 1})
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLICATION_CACHE", str(tmp / "cache"))
    result = R.execute(cfg, device="cpu", progress=False, market=market, out=tmp / "runs",
                       results=tmp / "results")
    mp.undo()
    return result, tmp / "results"


def test_cell_is_written_once_and_reused(trained, market, tmp_path, monkeypatch):
    result, results = trained
    c = P.cell(result, "topk", market, results, tmp_path, SMALL)
    saved = json.loads((tmp_path / f"{result['run_id']}-topk.json").read_text())
    assert saved == json.loads(json.dumps(c))
    assert c["eta"] is None and c["git_commit"] and c["data_fingerprint"] == market.fingerprint()
    assert len(c["daily"]["dates"]) == len(c["daily"]["return"]) > 50
    assert c["daily"]["dates"][0] >= split()["test"][0]
    assert c["daily"]["n_held"][0] == 0 and max(c["daily"]["n_held"]) >= SMALL.topk
    assert set(c["metrics"]) == {"excess_with_cost", "excess_without_cost", "absolute"}
    monkeypatch.setattr(P, "topk_drop", lambda *a, **k: pytest.fail("a finished cell was recomputed"))
    assert P.cell(result, "topk", market, results, tmp_path, SMALL) == saved
    assert P.cell(result, "topk", None, results, tmp_path, SMALL) == saved  # no data needed
    assert P.cell(result, "topk", None, results, tmp_path / "none", SMALL) is None
    monkeypatch.undo()
    other = P.cell(result, "topk", market, results, tmp_path, BacktestConfig.make(topk=12, n_drop=2))
    assert other["backtest"]["topk"] == 12  # other settings: computed again


def test_tdrisk_chooses_eta_on_validation_predictions_only(trained, market, tmp_path):
    result, results = trained
    first = P.cell(result, "tdrisk", market, results, tmp_path / "a", SMALL)
    assert first["eta"] in P.ETA_GRID and len(first["eta_selection"]) == len(P.ETA_GRID)
    best = max(first["eta_selection"], key=lambda r: r["information_ratio"])
    assert first["eta"] == best["eta"]
    # scramble the test predictions: the backtest changes, the choice of eta does not
    path = results / f"{result['run_id']}.npz"
    z = dict(np.load(path))
    rng = np.random.default_rng(0)
    scrambled = {**z, "mu": rng.permutation(z["mu"]), "sigma": rng.permutation(z["sigma"])}
    path.write_bytes(R._npz(**scrambled))
    try:
        second = P.cell(result, "tdrisk", market, results, tmp_path / "b", SMALL)
    finally:
        path.write_bytes(R._npz(**z))
    assert second["eta_selection"] == first["eta_selection"] and second["eta"] == first["eta"]
    assert second["predictions_digest"] != first["predictions_digest"]
    assert second["daily"]["return"] != first["daily"]["return"]


def test_equal_validation_scores_choose_the_smaller_eta(trained, market):
    result, results = trained
    valid = R.predictions(result["config"], "valid", results)
    valid["sigma"] = np.zeros_like(valid["sigma"])  # every eta ranks alike
    q = quotes(market, *split()["valid"], SMALL)
    eta, rows = P.choose_eta(valid, q, SMALL)
    assert eta == 0.0 and len({r["information_ratio"] for r in rows}) == 1


def test_unknown_strategy_is_refused(trained):
    with pytest.raises(ValueError, match="unknown strategy 'topkk'"):
        P.cell(trained[0], "topkk")


def _fake_cell(model, seed, strategy, ar, ir, mdd, eta=None):
    m = {"annualized_return": ar, "information_ratio": ir, "max_drawdown": mdd}
    return {"model": model, "seed": seed, "strategy": strategy, "eta": eta,
            "metrics": {"excess_with_cost": m, "excess_without_cost": m, "absolute": m}}


def test_table3_layout():
    cells = [_fake_cell("factorvae", 0, "tdrisk", 0.10, 1.0, -0.05, 0.2),
             _fake_cell("factorvae", 1, "tdrisk", 0.20, 2.0, -0.07, 0.1),
             _fake_cell("factorvae", 0, "topk", 0.10, 1.0, -0.05),
             _fake_cell("factorvae-prior", 0, "topk", 0.05, 0.5, -0.02),
             _fake_cell("gru", 0, "topk", 0.01, 0.1, -0.09)]
    df = table3(cells)
    assert df["Method"].tolist() == ["GRU", "ALSTM", "GAT", "Trans", "SFM", "Linear", "CA",
                                     "FactorVAE-prior", "FactorVAE", "FactorVAE(TDrisk)"]  # the paper's order
    sfm = df.set_index("Method").loc["SFM"]  # a row not backtested yet: the paper's values only
    assert sfm["seeds"] == "none yet" and sfm["AR"] == "" and sfm["paper AR"] == "3.33%"
    assert (df["seeds"] == "none yet").sum() == 6
    row = df.set_index("Method").loc["FactorVAE(TDrisk)"]
    assert row["AR"] == "15.00%(7.07%)" and row["SR"] == "1.50(0.71)" and row["MDD"] == "6.00%(1.41%)"
    assert row["paper AR"] == "16.32%" and row["eta (validation)"] == "0.2, 0.1"
    assert df.set_index("Method").loc["GRU", "AR"] == "1.00%(one seed)"
