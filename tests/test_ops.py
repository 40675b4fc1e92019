"""``replication.data.ops`` and ``alpha158_arrays`` against the slow reference.

The reference (``tests/qlib_reference.py``) is written window by window from Qlib's
and pandas' semantics and was itself checked against real Qlib (see
``tests/crosscheck_qlib.py``). The synthetic panel below packs in the edge cases:
late listing / delisting, NaN runs longer than the longest window, suspensions
(constant prices, volume 0 -> 0/0 and x/0), a constant stock, sparse stocks with 1
or 2 valid points per window, zero prices (+-inf), and high and low price levels.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import qlib_reference as R  # noqa: E402

from replication.data import ops  # noqa: E402
from replication.data.features import FEATURES, LABEL, alpha158_arrays  # noqa: E402

RTOL, ATOL = 1e-4, 1e-6
D = 150


# --------------------------------------------------------------------------- data
def make_panel(seed: int = 0) -> dict[str, np.ndarray]:
    """(D, S) float32 open/high/low/close/volume, one edge case per stock column."""
    rng = np.random.default_rng(seed)
    cols = []

    def stock(level=10.0, tick=0.01, vol=1e6):
        steps = rng.choice([-3, -2, -1, 0, 1, 2, 3], size=D) * tick
        c = np.maximum(level + np.cumsum(steps), tick)
        o = np.maximum(c + rng.choice([-2, -1, 0, 1, 2], size=D) * tick, tick)
        h = np.maximum(o, c) + rng.integers(0, 3, D) * tick
        lo = np.maximum(np.minimum(o, c) - rng.integers(0, 3, D) * tick, tick / 2)
        v = np.round(rng.lognormal(np.log(vol), 0.6, D))
        return {"open": o, "high": h, "low": lo, "close": c, "volume": v}

    def nan_out(s, idx):
        for k in s:
            s[k][idx] = np.nan
        return s

    def suspend(s, a, b):  # stored as previous close, volume 0 (this snapshot's convention)
        p = s["close"][a - 1]
        for k in ("open", "high", "low", "close"):
            s[k][a:b] = p
        s["volume"][a:b] = 0.0
        return s

    cols.append(stock())                                             # 0 plain
    cols.append(nan_out(nan_out(stock(), slice(0, 40)), slice(125, D)))  # 1 late list, delist
    s = stock()                                                      # 2 NaN runs 1, 3, 8, 70
    for a, b in ((20, 21), (30, 33), (40, 48), (60, 130)):
        nan_out(s, slice(a, b))
    cols.append(s)
    s = stock()                                                      # 3 suspensions
    for a, b in ((10, 13), (30, 37), (70, 95), (140, 141)):
        suspend(s, a, b)
    cols.append(s)
    s = stock()                                                      # 4 constant price
    for k in ("open", "high", "low", "close"):
        s[k][:] = 5.0
    s["volume"][rng.random(D) < 0.2] = 0.0
    cols.append(s)
    s = stock()                                                      # 5 sparse: every 7th day
    nan_out(s, np.arange(D) % 7 != 3)
    cols.append(s)
    s = stock()                                                      # 6 zeros -> +-inf
    s["open"][[15, 50, 51]] = 0.0
    s["high"][51] = s["low"][51] = 0.0       # 0/0 on day 51
    s["close"][[80, 100]] = 0.0
    s["volume"][[60, 61, 90, 91, 92]] = 0.0
    cols.append(s)
    cols.append(stock(level=2500.0, tick=0.01, vol=1e8))             # 7 high level
    cols.append(stock(level=0.5, tick=0.001, vol=100.0))             # 8 low level
    cols.append(nan_out(stock(), slice(None)))                       # 9 never stored
    cols.append(nan_out(stock(), slice(0, D - 1)))                   # 10 one day at the end
    s = nan_out(stock(), slice(0, D - 2))                            # 11 two days at the end
    cols.append(s)
    s = stock()                                                      # 12 long suspension +
    suspend(s, 20, 100)                                              #    short NaN inside
    nan_out(s, slice(50, 52))
    cols.append(s)
    s = stock(level=1.0)                                             # 13 micro-moves: std > 0
    s["close"][:] = 1.0 + np.cumsum(rng.choice([-1, 0, 0, 1], size=D)) * 1e-6  # but < 2e-5
    cols.append(s)
    return {k: np.stack([c[k] for c in cols], axis=1).astype(np.float32)
            for k in ("open", "high", "low", "close", "volume")}


def make_noise(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two (D, 6) float32 panels of signed noise with NaN runs, +-inf and constant runs."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, 6)).astype(np.float32)
    b = (0.5 * a + rng.normal(size=(D, 6))).astype(np.float32)
    a[rng.random((D, 6)) < 0.08] = np.nan
    b[rng.random((D, 6)) < 0.08] = np.nan
    a[rng.random((D, 6)) < 0.03] = np.inf
    b[rng.random((D, 6)) < 0.03] = -np.inf
    a[30:45, 1] = 2.0                     # constant run in a only
    b[50:70, 2] = -1.5                    # constant run in b only
    a[:, 3] = np.where(np.isnan(a[:, 3]), np.nan, 7.0)  # a constant throughout
    a[100:, 4] = np.nan                   # a ends early
    b[:30, 5] = np.nan                    # b starts late
    return a, b


PANEL = make_panel()
NOISE_A, NOISE_B = make_noise()
CLOSE = PANEL["close"]
LOGV = np.log(PANEL["volume"] + np.float32(1))
with np.errstate(divide="ignore", invalid="ignore"):
    RET = CLOSE / R.ref_1d(CLOSE, 1)  # ref_1d shifts along axis 0, so it takes a panel too
    DLOGV = np.log(PANEL["volume"] / R.ref_1d(PANEL["volume"], 1) + np.float32(1))


def _ref_cols(fn, *arrays, **kw) -> np.ndarray:
    """Apply a 1-D reference function column by column."""
    return np.stack([fn(*(a[:, j] for a in arrays), **kw) for j in range(arrays[0].shape[1])],
                    axis=1)


# --------------------------------------------------------------------------- compare
def mismatches(ours: np.ndarray, ref: np.ndarray, rtol=RTOL, atol=ATOL) -> np.ndarray:
    """Boolean mask of cells that disagree: NaN pattern, inf sign, or finite value."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    bad = np.isnan(ours) != np.isnan(ref)
    inf = np.isinf(ours) | np.isinf(ref)
    bad |= inf & (ours != ref)
    fin = np.isfinite(ours) & np.isfinite(ref)
    with np.errstate(invalid="ignore", over="ignore"):
        bad |= fin & ~(np.abs(ours - ref) <= atol + rtol * np.abs(ref))
    return bad


def assert_matches(ours, ref, what: str) -> None:
    bad = mismatches(ours, ref)
    if bad.any():
        idx = np.argwhere(bad)
        shown = "; ".join(f"[day {i}, col {j}] ours={np.asarray(ours)[i, j]!r} "
                          f"ref={np.asarray(ref)[i, j]!r}" for i, j in idx[:6])
        pytest.fail(f"{what}: {bad.sum()} of {bad.size} cells differ, e.g. {shown}")


# --------------------------------------------------------------------------- operators
WINDOWS = (1, 2, 5, 10, 60)
INPUTS = {"close": CLOSE, "logvol": LOGV, "noise": NOISE_A}
FINITE_INPUTS = {"close": CLOSE, "logvol": LOGV,
                 "noise": np.where(np.isinf(NOISE_A), np.nan, NOISE_A)}  # Cython ops: no inf


@pytest.mark.parametrize("n", (1, 5, 60, -1, -2))
@pytest.mark.parametrize("inp", sorted(INPUTS))
def test_ref(inp, n):
    x = INPUTS[inp]
    assert_matches(ops.ref(x, n), _ref_cols(R.ref_1d, x, n=n), f"ref({inp}, {n})")


@pytest.mark.parametrize("n", WINDOWS)
@pytest.mark.parametrize("inp", sorted(INPUTS))
@pytest.mark.parametrize("op", ("mean", "std"))
def test_mean_std(op, inp, n):
    x = INPUTS[inp]
    ours = getattr(ops, f"rolling_{op}")(x, n)
    assert_matches(ours, _ref_cols(getattr(R, f"{op}_1d"), x, n=n), f"{op}({inp}, {n})")


@pytest.mark.parametrize("n", WINDOWS)
@pytest.mark.parametrize("inp", sorted(FINITE_INPUTS))
@pytest.mark.parametrize("op", ("slope", "rsquare", "resi"))
def test_regression(op, inp, n):
    x = FINITE_INPUTS[inp]
    ours = getattr(ops, f"rolling_{op}")(x, n)
    assert_matches(ours, _ref_cols(getattr(R, f"{op}_1d"), x, n=n), f"{op}({inp}, {n})")


CORR_PAIRS = {"close~logvol": (CLOSE, LOGV), "ret~dlogvol": (RET, DLOGV),
              "noise": (NOISE_A, NOISE_B)}


@pytest.mark.parametrize("n", WINDOWS)
@pytest.mark.parametrize("pair", sorted(CORR_PAIRS))
def test_corr(pair, n):
    a, b = CORR_PAIRS[pair]
    assert_matches(ops.rolling_corr(a, b, n), _ref_cols(R.corr_1d, a, b, n=n),
                   f"corr({pair}, {n})")


def test_edge_cases_reached():
    """The panel really exercises the edge cases the tests claim to cover."""
    r2 = _ref_cols(R.rsquare_1d, CLOSE, n=10)
    resi = _ref_cols(R.resi_1d, CLOSE, n=10)
    assert np.any(np.isclose(r2[:, 5], 1.0))             # two valid points: R^2 = 1
    assert np.any(np.abs(resi[:, 5]) < 1e-9)             # ... and Resi = 0
    assert np.all(np.isnan(r2[:, 4]))                    # constant stock: guard fires
    assert np.all(np.isnan(r2[:, 13]))                   # tiny but nonzero std: guard fires
    assert np.nanmax(_ref_cols(R.std_1d, CLOSE, n=10)[:, 13]) > 0
    assert np.isnan(_ref_cols(R.slope_1d, CLOSE, n=10)[-1, 10])  # one point: NaN
    with np.errstate(divide="ignore", invalid="ignore"):
        feats = {k: _ref_cols(lambda *a, k=k: R.alpha158_1d(*a)[k], *_fields())
                 for k in ("KLEN", "ROC60", "CORD5", "VSTD5", LABEL)}
    assert np.isposinf(feats["KLEN"][:, 6]).any() and np.isnan(feats["KLEN"][51, 6])
    assert np.isinf(feats["ROC60"]).any() and np.isinf(feats[LABEL]).any()
    assert np.isinf(DLOGV).any() and np.isnan(DLOGV).any()          # x/0 and 0/0
    assert (feats["VSTD5"][:, 3] == 0).any()          # all-zero volume window: 0 / 1e-12
    assert np.nanmax(feats["VSTD5"]) > 1e12         # volume 0 today, not all window: huge


# --------------------------------------------------------------------------- features
def _fields():
    return tuple(PANEL[k] for k in ("open", "high", "low", "close", "volume"))


@pytest.fixture(scope="module")
def ours_features():
    return alpha158_arrays(*_fields())


@pytest.fixture(scope="module")
def ref_features():
    per_stock = [R.alpha158_1d(*(f[:, j] for f in _fields())) for j in range(CLOSE.shape[1])]
    return {k: np.stack([p[k] for p in per_stock], axis=1) for k in (*FEATURES, LABEL)}


def test_feature_names(ours_features):
    assert tuple(FEATURES) == R.FEATURES and LABEL == R.LABEL
    assert tuple(ours_features) == (*FEATURES, LABEL)


@pytest.mark.parametrize("name", (*R.FEATURES, R.LABEL))
def test_feature(name, ours_features, ref_features):
    ours = ours_features[name]
    assert ours.dtype == np.float32 and ours.shape == CLOSE.shape
    assert_matches(ours, ref_features[name], name)


# --------------------------------------------------------------------------- can fail
def _count(x, n):
    return _ref_cols(lambda v: np.array([np.isfinite(w).sum() for _, w in R._windows(v, n)]),
                     x)


MUTANTS = {
    # Std with ddof=0 instead of 1
    "std-ddof0": (lambda: _ref_cols(R.std_1d, CLOSE, n=5)
                  * np.sqrt(np.maximum(_count(CLOSE, 5) - 1, 0) / _count(CLOSE, 5)),
                  lambda: _ref_cols(R.std_1d, CLOSE, n=5)),
    # Resi on positions 0..n-1 but evaluated at n (one step too far)
    "resi-positions": (lambda: _ref_cols(R.resi_1d, CLOSE, n=10)
                       - _ref_cols(R.slope_1d, CLOSE, n=10),
                       lambda: _ref_cols(R.resi_1d, CLOSE, n=10)),
    # Rsquare without the std guard
    "rsquare-noguard": (lambda: _ref_cols(
        lambda v: np.array([R._ols(w, 10)[2] for _, w in R._windows(v, 10)]), CLOSE),
        lambda: _ref_cols(R.rsquare_1d, CLOSE, n=10)),
    # Mean that does not treat inf as missing
    "mean-keeps-inf": (lambda: _ref_cols(
        lambda v: np.array([np.nanmean(w) if (~np.isnan(w)).any() else np.nan
                            for _, w in R._windows(v, 5)]), NOISE_A),
        lambda: _ref_cols(R.mean_1d, NOISE_A, n=5)),
    # Corr without pairwise masking
    "corr-not-pairwise": (lambda: _ref_cols(
        lambda a, b: np.array([
            np.corrcoef(np.nan_to_num(x, nan=np.nanmean(x[np.isfinite(x)]) if np.isfinite(x).any()
                                      else 0, posinf=0, neginf=0),
                        np.nan_to_num(y, nan=0, posinf=0, neginf=0))[0, 1]
            for (_, x), (_, y) in zip(R._windows(a, 10), R._windows(b, 10))]), NOISE_A, NOISE_B),
        lambda: _ref_cols(R.corr_1d, NOISE_A, NOISE_B, n=10)),
    # Ref shifted the wrong way
    "ref-sign": (lambda: _ref_cols(R.ref_1d, CLOSE, n=-1), lambda: _ref_cols(R.ref_1d, CLOSE, n=1)),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_comparison_catches(mutant):
    """Each deliberately wrong variant is told apart from the reference on this panel."""
    wrong, right = MUTANTS[mutant]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mismatches(wrong(), right()).any()
