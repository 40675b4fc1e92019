"""Table 2: the held-out stocks never reach training or validation; the evaluation uses exactly them."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import replication.run as R
from replication import robustness
from replication.data import load_market
from replication.data.dataset import DataConfig, dataset
from replication.data.provider import DataError
from replication.metrics import summarize
from replication.synthetic import split
from replication.train import DeviceData

DATA = DataConfig.make(universe="csi300", **split())


@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


@pytest.fixture(scope="module")
def ds(market, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # this module's datasets in a cache of its own
        mp.setenv("REPLICATION_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield dataset(DATA, market=market, progress=False)


def test_draw_is_reproducible_nested_and_from_stocks_in_train_and_test(ds):
    a20, a40 = robustness.heldout(ds, 20, seed=3), robustness.heldout(ds, 40, seed=3)
    assert len(set(a20)) == 20 and np.array_equal(a20, robustness.heldout(ds, 20, seed=3))
    assert set(a20) <= set(a40)  # nested: m = 20 among m = 40
    assert not np.array_equal(a20, robustness.heldout(ds, 20, seed=4))
    assert set(a40) <= set(ds.splits["train"].stock) & set(ds.splits["test"].stock)
    n = len(robustness.candidates(ds))
    for bad in (0, n + 1):
        with pytest.raises(DataError, match=f"m={bad}.*1 <= m <= {n}"):
            robustness.heldout(ds, bad, seed=0)


def test_excluded_stocks_leave_train_and_valid_and_nothing_learned_depends_on_them(ds, market):
    """Built with ``exclude``, the train and valid splits (samples, labels, CSRankNorm
    targets) and the normalisation statistics are exactly those of a market in which
    the excluded stocks' data is different: nothing learned from training sees them."""
    import dataclasses

    cols = robustness.heldout(ds, 25, seed=0)
    out = dataset(DATA, market=market, progress=False, exclude=ds.codes[cols])
    rng = np.random.default_rng(0)
    other = dataclasses.replace(market, fields={  # their prices and volumes: noise
        k: np.where(np.isin(market.codes, ds.codes[cols])[None, :],
                    v * rng.uniform(0.5, 1.5, v.shape).astype(np.float32), v)
        for k, v in market.fields.items()}, _col={})
    again = dataset(DATA, market=other, progress=False, exclude=ds.codes[cols])
    assert out.excluded == tuple(sorted(ds.codes[cols])) and not np.array_equal(again.x, out.x)
    for k in ("median", "scale"):
        np.testing.assert_array_equal(out.norm[k], again.norm[k])
        assert not np.array_equal(out.norm[k], ds.norm[k])  # refitted without them
    for name in ("train", "valid"):
        a, b, full = out.splits[name], again.splits[name], ds.splits[name]
        assert not np.isin(a.stock, cols).any()
        assert len(a.stock) == (~np.isin(full.stock, cols)).sum()  # nothing else lost
        for f in ("days", "offsets", "stock", "label", "target"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert not np.array_equal(a.target, full.target[~np.isin(full.stock, cols)])  # re-ranked
    for f in ("days", "offsets", "stock"):  # the test split keeps every stock
        np.testing.assert_array_equal(getattr(out.splits["test"], f), getattr(ds.splits["test"], f))
    with pytest.raises(DataError, match="cannot exclude \\['XX000001'\\]"):
        dataset(DATA, market=market, progress=False, exclude=["XX000001"])


def test_heldout_run_never_trains_or_validates_on_them_and_scores_exactly_them(
        market, tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    seen = {"train": set(), "valid": set(), "test": set()}
    batch = DeviceData.batch

    def spy(self, name, k):  # every batch training, early stopping and prediction take
        sp = self.splits[name]
        seen[name].update(sp["stock"][sp["offsets"][k]:sp["offsets"][k + 1]].tolist())
        return batch(self, name, k)

    monkeypatch.setattr(DeviceData, "batch", spy)
    config = R.run_config("factorvae", 1, DATA, {}, {"max_epochs": 1}, heldout=20)
    r = R.execute(config, device="cpu", progress=False, market=market,
                  out=tmp_path / "runs", results=tmp_path / "results")
    ds = dataset(DATA, market=market, progress=False)
    cols = robustness.heldout(ds, 20, seed=1)
    assert r["run_id"].startswith("factorvae-csi300-m20-seed1-")
    assert r["heldout"]["codes"] == ds.codes[cols].tolist()
    assert not seen["train"] & set(cols.tolist()) and not seen["valid"] & set(cols.tolist())
    assert set(cols.tolist()) <= seen["test"]  # the test cross-section still holds them
    assert not (tmp_path / "predictions").exists()  # not a Table 1 run: nothing committed
    # Table 2's number: daily Spearman over the held-out stocks of the day, by hand
    p = np.load(tmp_path / "results" / f"{r['run_id']}.npz")
    mine = np.isin(p["instrument"], r["heldout"]["codes"]) & np.isfinite(p["label"])
    daily = [spearmanr(p["mu"][mine & (p["date"] == d)], p["label"][mine & (p["date"] == d)])[0]
             for d in np.unique(p["date"][mine])]
    assert r["heldout"]["test"]["rank_ic"] == pytest.approx(np.nanmean(daily), abs=1e-12)
    assert r["heldout"]["test"]["days"] == np.isfinite(daily).sum()
    assert r["heldout"]["test"]["rank_ic"] != pytest.approx(r["test"]["rank_ic"], abs=1e-9)
    # the seen-stock reference scores any run's saved predictions the same way: on this
    # run's own predictions it gives this run's number
    pred = R.predictions(config, "test", tmp_path / "results")
    again = summarize(robustness.daily_rank_ic_over(pred, r["heldout"]["codes"]))
    assert again["rank_ic"] == pytest.approx(r["heldout"]["test"]["rank_ic"], abs=1e-12)
    assert again["rank_icir"] == pytest.approx(r["heldout"]["test"]["rank_icir"], abs=1e-9)
    assert again["days"] == r["heldout"]["test"]["days"]
    other = summarize(robustness.daily_rank_ic_over(pred, r["heldout"]["codes"][:10]))
    assert other["rank_ic"] != pytest.approx(again["rank_ic"], abs=1e-9)  # the codes matter


def test_heldout_must_not_be_negative():
    with pytest.raises(ValueError, match="heldout must be >= 0"):
        R.run_config("gru", 0, DATA, heldout=-5)


def test_table1_run_keeps_its_score_over_each_heldout_set_of_its_seed(market, tmp_path, monkeypatch):
    """The "seen" reference of table2_seen is in a Table 1 run's result file, equal to
    scoring its saved predictions over the Table 2 run's held-out codes, so the pairs
    survive the loss of ``results/``; it answers only for exactly those codes."""
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(robustness, "TABLE2_M", (10, 20, 10**6))  # the synthetic universe is small
    config = R.run_config("linear", 2, DATA, {}, {"max_epochs": 1})
    r = R.execute(config, device="cpu", progress=False, market=market,
                  out=tmp_path / "runs", results=tmp_path / "results")
    assert set(r["seen_heldout"]) == {"10", "20"}  # an m larger than the universe is skipped
    t2 = R.execute(R.run_config("linear", 2, DATA, {}, {"max_epochs": 1}, heldout=20), device="cpu",
                   progress=False, market=market, out=tmp_path / "runs", results=tmp_path / "results")
    assert t2["seen_heldout"] is None  # a Table 2 run has no "seen" scores of its own
    codes = t2["heldout"]["codes"]
    pred = R.predictions(config, "test", tmp_path / "results")
    want = summarize(robustness.daily_rank_ic_over(pred, codes))
    got = robustness.seen_score(r, codes)
    assert got["rank_ic"] == pytest.approx(want["rank_ic"], abs=1e-12) and got["days"] == want["days"]
    assert got["rank_ic"] != pytest.approx(t2["heldout"]["test"]["rank_ic"], abs=1e-9)  # another model
    assert robustness.seen_score(r, codes[:10]) is None  # 10 codes, but not seed 2's 10
    assert robustness.seen_score(r, list(reversed(codes))) is None
    assert robustness.seen_score({"run_id": "older"}, codes) is None
