"""Table 2: the held-out stocks never reach training or validation; the evaluation uses exactly them."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import replication.run as R
from replication import robustness
from replication.data import load_market
from replication.data.dataset import DataConfig, cs_rank_norm, dataset
from replication.data.provider import DataError
from replication.synthetic import split
from replication.train import DeviceData

DATA = DataConfig.make(universe="csi300", **split())


@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


@pytest.fixture(scope="module")
def ds(market, tmp_path_factory):
    import os

    os.environ["REPLICATION_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return dataset(DATA, market=market, progress=False)


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


def test_without_removes_exactly_them_from_train_and_valid_and_reranks_targets(ds):
    cols = robustness.heldout(ds, 25, seed=0)
    out = robustness.without(ds, cols)
    assert out.x is ds.x and out.splits["test"] is ds.splits["test"]  # test and panel untouched
    for name in ("train", "valid"):
        before, after = ds.splits[name], out.splits[name]
        assert not np.isin(after.stock, cols).any()
        assert len(after.stock) == (~np.isin(before.stock, cols)).sum()  # nothing else lost
        for k in (0, len(after) - 1):  # a day's target: CSRankNorm over its remaining stocks
            a, b = after.offsets[k], after.offsets[k + 1]
            np.testing.assert_allclose(after.target[a:b],
                                       cs_rank_norm(after.label[a:b], np.zeros(b - a, int)))
            j = int(np.flatnonzero(before.days == after.days[k])[0])
            ba, bb = before.offsets[j], before.offsets[j + 1]
            keep = ~np.isin(before.stock[ba:bb], cols)
            np.testing.assert_array_equal(before.stock[ba:bb][keep], after.stock[a:b])


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


def test_heldout_must_not_be_negative():
    with pytest.raises(ValueError, match="heldout must be >= 0"):
        R.run_config("gru", 0, DATA, heldout=-5)
