import numpy as np
import pytest
from scipy.stats import spearmanr

from replication.metrics import daily_rank_ic, summarize


def test_daily_rank_ic_matches_scipy_spearman_with_ties_and_nan():
    rng = np.random.default_rng(0)
    sizes = [5, 40, 300, 2]
    offsets = np.r_[0, np.cumsum(sizes)]
    pred = rng.normal(size=offsets[-1])
    label = np.round(pred + rng.normal(size=offsets[-1]), 1)  # ties in the label
    label[3] = np.nan
    got = daily_rank_ic(pred, label, offsets)
    for k, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        ok = np.isfinite(label[a:b])
        assert got[k] == pytest.approx(spearmanr(pred[a:b][ok], label[a:b][ok])[0], abs=1e-12)


def test_degenerate_days_are_nan_and_skipped():
    offsets = np.array([0, 1, 4, 7])
    pred = np.array([1.0, 1, 2, 3, 1, 2, 3])
    label = np.array([0.5, np.nan, np.nan, 1, 2, 2, 2])  # 1 stock; 1 labelled; constant label
    assert np.isnan(daily_rank_ic(pred, label, offsets)).all()
    s = summarize(np.array([0.1, np.nan, 0.3, 0.2]))
    assert s["days"] == 3 and s["rank_ic"] == pytest.approx(0.2)
    assert s["rank_icir"] == pytest.approx(0.2 / np.std([0.1, 0.3, 0.2], ddof=1))
