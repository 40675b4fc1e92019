"""The synthetic market: a valid Qlib provider directory with A-share mechanics and a
known, realistically weak predictability."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from replication.data import read_provider
from replication.synthetic import INDEX, MARKER, calendar, split, stock_codes, write_market

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_stocks=30, n_days=150)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """The default market (200 stocks x 600 days, seed 0), read back."""
    path = write_market(tmp_path_factory.mktemp("syn") / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading it must raise no warning
        m = read_provider(path)
    return path, m, np.load(path / "truth.npz")


def stock_panel(m, truth, field):
    """(days, stocks) float64 of ``field`` with columns in the truth's code order."""
    return m.fields[field][:, [m.column(c) for c in truth["codes"]]].astype(np.float64)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def daily_spearman(pred: np.ndarray, real: np.ndarray, rows) -> float:
    ics = []
    for d in rows:
        ok = np.isfinite(pred[d]) & np.isfinite(real[d])
        if ok.sum() > 10:
            ics.append(spearmanr(pred[d, ok], real[d, ok])[0])
    return float(np.mean(ics))


def rows_of(m, start, end) -> range:
    i0, i1 = m.date_range(start, end)
    return range(i0, i1)


# --- files, determinism, reuse -----------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = files(write_market(tmp_path / "a", **SMALL))
    b = files(write_market(tmp_path / "b", **SMALL))
    c = files(write_market(tmp_path / "c", seed=1, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert "truth.npz" in a and MARKER in a
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no tmp dirs left


def test_reuse_replace_and_refuse(tmp_path):
    out = write_market(tmp_path / "m", **SMALL)
    stamp = (out / "truth.npz").stat().st_mtime_ns
    assert write_market(out, **SMALL) == out
    assert (out / "truth.npz").stat().st_mtime_ns == stamp  # reused, not rebuilt
    write_market(out, seed=3, **SMALL)  # other parameters: replaced
    assert '"seed": 3' in (out / MARKER).read_text()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):  # never deletes a directory it did not write
        write_market(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_cli(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "replication.synthetic", "--out", str(out), "--stocks", "20",
         "--days", "100", "--seed", "2", "--start", "2020-01-01"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    m = read_provider(out)
    assert len(m.calendar) == 100 and str(m.calendar[0]) == "2020-01-01"
    assert len(m.codes) == 21  # 20 stocks + the index


def test_shapes_codes_calendar(market):
    path, m, truth = market
    cal = calendar(600, "2016-01-04")
    assert np.array_equal(m.calendar, cal)
    assert np.all(np.is_busday(m.calendar))
    codes = stock_codes(200)
    assert len(set(codes)) == 200 and {c[:2] for c in codes} == {"SH", "SZ"}
    assert list(m.codes) == sorted(codes + [INDEX])
    assert list(truth["codes"]) == codes and list(truth["dates"]) == list(cal.astype(str))
    assert set(m.markets) == {"all", "csi300"}
    assert truth["mu"].shape == (600, 200) and truth["beta"].shape == (600, 200, 3)
    assert truth["factors"].shape == (600, 3)
    sp = split()
    assert [sp[k][0] for k in ("train", "valid", "test")] == \
        [str(cal[0]), str(cal[360]), str(cal[480])]
    assert sp["test"][1] == str(cal[-3]) and sp["train"][1] == str(cal[359])


# --- A-share mechanics --------------------------------------------------------------------


def test_ohlc_cents_volume(market):
    _, m, truth = market
    o, h, lo, c, v, f = (stock_panel(m, truth, k)
                         for k in ("open", "high", "low", "close", "volume", "factor"))
    trade = np.isfinite(c)
    assert np.all(h[trade] >= np.maximum(o, c)[trade])
    assert np.all(lo[trade] <= np.minimum(o, c)[trade])
    assert np.all(lo[trade] > 0) and np.all(v[trade] > 0)
    for x in (o, h, lo, c):
        cents = x[trade] / f[trade] * 100  # raw = adjusted / factor, in integer cents
        assert np.max(np.abs(cents - np.round(cents))) < 0.02
    first = m.first[[m.column(x) for x in truth["codes"]]]
    assert np.allclose(c[first, np.arange(c.shape[1])], 1.0)  # Qlib: first adjusted close 1
    # volume co-moves with |return|
    r = np.abs(c[1:] / c[:-1] - 1)
    ok = np.isfinite(r) & np.isfinite(v[1:])
    assert spearmanr(r[ok], (v[1:] / np.nanmean(v, 0))[ok])[0] > 0.1


def test_limits_and_factor_events(market):
    _, m, truth = market
    c, f, ch = (stock_panel(m, truth, k) for k in ("close", "factor", "change"))
    r = c[1:] / c[:-1] - 1
    prev_raw_cents = c[:-1] / f[:-1] * 100
    ok = np.isfinite(r)
    # the limit applies to the reference price (>= half the previous close after a split):
    # |return| <= 10% plus half a cent of rounding
    assert np.all(np.abs(r[ok]) <= 0.10 + 1.0 / prev_raw_cents[ok] + 1e-5)
    assert np.allclose(ch[1:][ok], 100 * r[ok], atol=1e-3)
    assert (np.abs(ch[np.isfinite(ch)]) > 9.9).mean() > 0.001  # limit days occur
    event = ok & (np.abs(f[1:] / f[:-1] - 1) > 1e-6)
    assert event.sum() > 50
    raw = (c[1:] / f[1:]) / (c[:-1] / f[:-1]) - 1
    assert np.all(np.abs(r[event]) <= 0.11)  # adjusted prices stay continuous ...
    assert (raw[event] < -0.2).sum() > 5  # ... across splits the raw price jumps down


def test_suspensions_listings_delistings(market):
    path, m, truth = market
    cols = [m.column(x) for x in truth["codes"]]
    stored = m.stored()[:, cols]
    nan_rows = np.all([~np.isfinite(stock_panel(m, truth, k)) for k in m.fields], axis=0)
    assert (nan_rows & stored).sum() > 50  # suspended days: every field NaN
    any_nan = np.any([~np.isfinite(stock_panel(m, truth, k)) for k in m.fields
                      if k != "change"], axis=0)
    assert np.array_equal(any_nan & stored, nan_rows & stored)
    assert (m.first[cols] > 0).sum() >= 5 and (m.last[cols] < 599).sum() >= 3
    spans = m.markets["all"]
    for j, code in zip(cols, truth["codes"]):
        assert spans[code] == [(m.calendar[m.first[j]], m.calendar[m.last[j]])]


def test_index_and_membership(market):
    _, m, truth = market
    j = m.column(INDEX)
    assert m.first[j] == 0 and m.last[j] == 599
    x = {k: m.fields[k][:, j] for k in m.fields}
    assert all(np.isfinite(v).all() for v in x.values())
    assert np.all(x["factor"] == 1) and np.all(x["volume"] > 0)
    assert np.all(x["high"] >= np.maximum(x["open"], x["close"]))
    assert np.all(x["low"] <= np.minimum(x["open"], x["close"]))
    ir = x["close"][1:] / x["close"][:-1] - 1
    assert 0.005 < ir.std() < 0.03
    csi = m.markets["csi300"]
    assert INDEX not in csi and max(len(s) for s in csi.values()) >= 2
    mem = m.membership("csi300")
    assert np.all((mem.sum(1) > 55) & (mem.sum(1) <= 67))  # about a third of 200
    assert not (mem & ~m.stored()).any()
    # the index follows its members' cap-weighted returns, not all stocks'
    c = m.fields["close"].astype(np.float64)
    r = np.nan_to_num(c[1:] / c[:-1] - 1)
    members_mean = (r * mem[1:]).sum(1) / mem[1:].sum(1)
    assert np.corrcoef(members_mean, ir)[0, 1] > 0.9


# --- predictability ----------------------------------------------------------------------


def test_truth_rank_ic(market):
    _, m, truth = market
    c = stock_panel(m, truth, "close")
    nxt = np.full_like(c, np.nan)
    nxt[:-1] = c[1:] / c[:-1] - 1  # realised return from day d to d+1
    ic = daily_spearman(truth["mu"], nxt, rows_of(m, *split()["test"]))
    assert 0.03 < ic < 0.2  # clearly predictable, not trivially
    # mu is the model's own decomposition
    mu = truth["alpha"] + np.einsum("dsk,dk->ds", truth["beta"], truth["factor_mean"])
    ok = np.isfinite(truth["mu"])
    assert np.allclose(mu[ok], truth["mu"][ok], atol=1e-6)


def fit_predict_ic(x: np.ndarray, label: np.ndarray, train: range, test: range) -> float:
    """OLS of the day-ranked label on day-standardised features (train days), then the
    mean daily Spearman of the prediction vs the label on test days.

    ``x`` is (days, stocks, features), ``label`` (days, stocks); NaN allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN days at the start
        mu, sd = np.nanmean(x, 1, keepdims=True), np.nanstd(x, 1, keepdims=True)
    z = np.nan_to_num(np.clip((x - mu) / np.where(sd > 0, sd, 1), -3, 3))
    y = pd.DataFrame(label).rank(axis=1, pct=True).to_numpy() - 0.5
    rows = [(d, np.isfinite(y[d])) for d in train]
    xt = np.concatenate([z[d][ok] for d, ok in rows])
    yt = np.concatenate([y[d][ok] for d, ok in rows])
    w = np.linalg.lstsq(np.c_[xt, np.ones(len(xt))], yt, rcond=None)[0]
    return daily_spearman(z @ w[:-1], label, test)


def test_simple_features_predict_label(market):
    """A few Alpha158-like features, computed here, rank the t+2 label out of sample."""
    _, m, truth = market
    o, h, lo, c, v = (pd.DataFrame(stock_panel(m, truth, k))
                      for k in ("open", "high", "low", "close", "volume"))
    feats = [(h - lo) / o, (np.minimum(o, c) - lo) / o, c.shift(60) / c,
             c.rolling(5).std() / c, (c - c.rolling(5).mean()) / c,
             c.rolling(20).std() / c, v.rolling(5).std() / v,
             c.rolling(10).corr(np.log(v + 1))]
    x = np.stack([f.to_numpy() for f in feats], -1)
    label = np.full(c.shape, np.nan)
    label[:-2] = (c.shift(-2) / c.shift(-1) - 1).to_numpy()[:-2]
    sp = split()
    tr = rows_of(m, *sp["train"])
    ic = fit_predict_ic(x, label, range(max(tr.start, 60), tr.stop), rows_of(m, *sp["test"]))
    assert ic > 0.02


def test_alpha158_predicts_label(market):
    """The repository's Alpha158-20 features make the label predictable out of sample."""
    data = pytest.importorskip("replication.data")
    if not hasattr(data, "alpha158"):
        pytest.skip("replication.data.alpha158 not written yet")
    path, m, _ = market
    sp = split()
    df = data.alpha158(provider=path, instruments="all", start=sp["train"][0], end=sp["test"][1])
    assert df.index.names == ["datetime", "instrument"] and "LABEL0" in df.columns
    feats = [k for k in df.columns if k != "LABEL0"]
    assert len(feats) == 20
    df = df.drop(INDEX, level="instrument", errors="ignore")
    days = df.index.get_level_values("datetime").unique().sort_values()
    panel = {k: df[k].unstack("instrument").reindex(days) for k in df.columns}
    x = np.stack([panel[k].to_numpy(np.float64) for k in feats], -1)
    label = panel["LABEL0"].to_numpy(np.float64)
    cut = days.searchsorted(pd.Timestamp(sp["train"][1]), side="right")
    test0 = days.searchsorted(pd.Timestamp(sp["test"][0]))
    ic = fit_predict_ic(x, label, range(60, cut), range(test0, len(days)))
    assert ic > 0.02
