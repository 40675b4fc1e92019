"""Processors, the inclusion rule and windows, splits, cache, and no look-ahead."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from replication.data import DataError, alpha158, load_market
from replication.data.dataset import (DataConfig, build, cs_rank_norm, dataset, prepare,
                                      robust_zscore_apply, robust_zscore_fit)
from replication.data.features import FEATURES, feature_panel
from replication.synthetic import split


@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


@pytest.fixture(scope="module")
def config():
    return DataConfig.make(universe="csi300", **split())


@pytest.fixture(scope="module")
def ds(market, config):
    return build(prepare(market, config), config)


def test_robust_zscore_matches_numpy_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_t(3, size=(500, 4)).astype(np.float32)
    x[::7, 1] = np.nan
    x[3, 2], x[4, 2] = np.inf, -np.inf
    med, scale = robust_zscore_fit(x)
    for j in range(4):
        col = x[:, j][~np.isnan(x[:, j])].astype(np.float64)
        m = np.median(col)
        assert med[j] == pytest.approx(m, rel=1e-6)
        assert scale[j] == pytest.approx((np.median(np.abs(col - m)) + 1e-12) * 1.4826, rel=1e-6)
    y = robust_zscore_apply(x.copy(), med, scale)
    expect = np.clip((x - med) / scale, -3, 3)
    expect[np.isnan(expect)] = 0
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)
    assert y[3, 2] == 3 and y[4, 2] == -3 and (y[::7, 1] == 0).all()


def test_cs_rank_norm_matches_pandas_average_ranks():
    values = np.array([0.3, -1, 0.3, 2, 5, 5, 5, -2, 0.1], dtype=np.float32)
    day = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    got = cs_rank_norm(values, day)
    s = pd.Series(values, index=day)
    expect = (s.groupby(level=0).rank(pct=True) - 0.5) * 3.46
    np.testing.assert_allclose(got, expect.to_numpy(), rtol=1e-6)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown DataConfig keys \\['universee'\\]"):
        DataConfig.make(universee="all")
    with pytest.raises(DataError, match="unknown universe 'csi500'"):
        DataConfig(universe="csi500")
    with pytest.raises(DataError, match="ordered"):
        DataConfig(valid=("2017-06-01", "2018-12-31"))


def _independent_eligibility(market, config, T):
    """The inclusion rule recomputed with pandas, one stock at a time."""
    close = pd.DataFrame(market.fields["close"], index=market.calendar, columns=market.codes)
    volume = pd.DataFrame(market.fields["volume"], index=market.calendar, columns=market.codes)
    traded = (close.notna() & (volume > 0)).astype(int)
    full = traded.rolling(T).sum() == T
    member = pd.DataFrame(market.membership(config.universe), index=market.calendar,
                          columns=market.codes)
    return full & member


def test_inclusion_rule_and_windows(market, config, ds):
    eligible = _independent_eligibility(market, config, config.T)
    raw = alpha158(market, instruments=config.universe)
    label = raw["LABEL0"].unstack()
    for sp in ("train", "valid", "test"):
        for k in (0, len(ds.splits[sp]) // 2, len(ds.splits[sp]) - 1):
            x, y, target, codes = ds.day(sp, k)
            day = ds.dates(sp)[k]
            expect = set(eligible.columns[eligible.loc[day].to_numpy()])
            if sp != "test":
                expect &= set(label.columns[label.loc[day].notna().to_numpy()])
                assert np.isfinite(target).all()
            else:
                assert np.isnan(target).all()
            assert set(codes) == expect and len(codes) == x.shape[0]
            assert x.shape[1:] == (config.T, len(FEATURES))
            np.testing.assert_array_equal(y, label.loc[day, codes].to_numpy())
            # the window: normalised raw features of the T days ending at `day`
            pos = ds.calendar.searchsorted(np.datetime64(day))
            for j in (0, len(codes) - 1):
                window = raw.xs(codes[j], level="instrument").reindex(
                    pd.DatetimeIndex(ds.calendar[pos - config.T + 1:pos + 1]))
                expect_x = robust_zscore_apply(window[list(FEATURES)].to_numpy(np.float32).copy(),
                                               ds.norm["median"], ds.norm["scale"])
                np.testing.assert_array_equal(x[j], expect_x)


def test_suspended_stock_leaves_the_cross_section_for_T_days(market, config, ds):
    """A volume-0 (or NaN) day in the window excludes the stock: it did not trade."""
    traded = market.trading()
    d, s = np.nonzero(~traded[100:-5] & (market.stored()[100:-5]))
    d = d + 100
    code = market.codes[s[0]]
    for sp in ds.splits:
        for k, day in enumerate(ds.splits[sp].days):
            if d[0] <= day < d[0] + config.T:
                assert code not in ds.day(sp, k)[3]


def test_normaliser_is_fitted_on_train_rows_only(market, config, ds):
    rows = market.stored() & market.membership("csi300")
    i0, i1 = market.date_range(*config.train)
    feats = feature_panel(market, 0, len(market.calendar))[0]
    train = feats[i0:i1][rows[i0:i1]]
    med, scale = robust_zscore_fit(train)
    np.testing.assert_allclose(ds.norm["median"], med)
    np.testing.assert_allclose(ds.norm["scale"], scale)
    everything = feats[rows]
    assert not np.allclose(robust_zscore_fit(everything)[0], med)


def _perturbed_after(market, day_index, seed=1):
    """The market with every field after ``day_index`` scrambled (finite, positive)."""
    rng = np.random.default_rng(seed)
    fields = {}
    for k, v in market.fields.items():
        w = v.copy()
        w[day_index + 1:] *= rng.uniform(0.5, 1.5, size=w[day_index + 1:].shape).astype(np.float32)
        fields[k] = w
    return dataclasses.replace(market, fields=fields, _col={})


def test_no_look_ahead_in_features(market):
    s = 400
    xa, la = feature_panel(market, 0, len(market.calendar))
    xb, lb = feature_panel(_perturbed_after(market, s), 0, len(market.calendar))
    np.testing.assert_array_equal(xa[:s + 1], xb[:s + 1])  # features up to day s
    np.testing.assert_array_equal(la[:s - 1], lb[:s - 1])  # labels read s+1, s+2
    assert not np.array_equal(xa[s + 1:], xb[s + 1:], equal_nan=True)


def test_no_look_ahead_in_samples(market, config, ds):
    """Scrambling everything after a valid-period day s changes no sample up to s."""
    s = int(ds.splits["valid"].days[40])
    other = build(prepare(_perturbed_after(market, s), config), config)
    np.testing.assert_array_equal(ds.norm["median"], other.norm["median"])
    for sp in ("train", "valid"):
        for k in np.flatnonzero(ds.splits[sp].days <= s):
            xa, ya, _, ca = ds.day(sp, k)
            xb, yb, _, cb = other.day(sp, k)
            np.testing.assert_array_equal(ca, cb)
            np.testing.assert_array_equal(xa, xb)
            if ds.splits[sp].days[k] <= s - 2:
                np.testing.assert_array_equal(ya, yb)


def test_history_before_range_start_is_used(market):
    full = alpha158(market, instruments="all")
    part = alpha158(market, instruments="all", start="2017-01-03", end="2017-03-31")
    expect = full.loc["2017-01-03":"2017-03-31"]
    pd.testing.assert_frame_equal(part, expect)
    assert part.loc["2017-01-03", "ROC60"].notna().mean() > 0.9


def test_cache_round_trip_and_half_written_folder(market, config, tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path))
    first = dataset(config, market=market, progress=False)
    folders = list((tmp_path / "datasets").iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").is_file()
    again = dataset(config, market=market, progress=False)
    np.testing.assert_array_equal(first.x, again.x)
    for sp in first.splits:
        for f in dataclasses.fields(first.splits[sp]):
            np.testing.assert_array_equal(getattr(first.splits[sp], f.name),
                                          getattr(again.splits[sp], f.name))
    (folders[0] / "meta.json").unlink()  # as if interrupted before the last write
    third = dataset(config, market=market, progress=False)
    np.testing.assert_array_equal(first.x, third.x)
    other = dataset(DataConfig.make(universe="all", **split()), market=market, progress=False)
    assert other.x.shape[1] > first.x.shape[1]
    assert len(list((tmp_path / "datasets").iterdir())) == 2


def test_all_universe_excludes_indices(market):
    cfg = DataConfig.make(universe="all", **split())
    ds = build(prepare(market, cfg), cfg)
    assert "SH000300" not in ds.codes and len(ds.codes) == len(market.codes) - 1


def test_test_labels_need_two_more_days(market):
    cal = market.calendar.astype(str)
    cfg = DataConfig.make(universe="all", **{**split(), "test": (split()["test"][0], cal[-1])})
    with pytest.raises(DataError, match="need 2 trading days after"):
        prepare(market, cfg)


def test_real_csi300_dataset(real_market, tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path))
    import time

    ds = dataset(DataConfig(universe="csi300"), market=real_market, progress=False)
    t0 = time.time()
    ds = dataset(DataConfig(universe="csi300"), market=real_market, progress=False)
    assert time.time() - t0 < 30
    assert ds.x.dtype == np.float32 and np.isfinite(ds.x).all() and np.abs(ds.x).max() <= 3
    n = {sp: np.diff(s.offsets) for sp, s in ds.splits.items()}
    assert 200 < np.median(n["train"]) <= 300 and 240 < np.median(n["test"]) <= 300
    assert str(ds.dates("train")[0]) == "2010-01-29"  # first day with 20 days of history
    assert str(ds.dates("test")[-1]) == "2020-12-31"
    assert len(ds.splits["valid"]) == 243 and len(ds.splits["test"]) == 487
