"""Slow, independent reference for Qlib's operators and the 20 Alpha158 features + label.

One 1-D series at a time, one window at a time, written from Qlib's source
(``qlib/data/ops.py``, ``qlib/data/_libs/rolling.pyx``) and pandas' rolling
semantics -- deliberately *not* vectorised and sharing no code with
``replication.data.ops``, so the two can check each other.

Semantics reproduced (Qlib 0.9.7 with pandas 3.x):

* A series is one stock's values on consecutive calendar days, NaN where missing.
* ``Ref(x, n)``: plain shift, NaN-filled (n > 0 looks back, n < 0 looks ahead).
* ``Mean/Std(x, n)``: pandas ``rolling(n, min_periods=1)``: the window ends today
  and holds up to ``n`` days; NaN *and* +-inf are skipped (pandas' ``_prep_values``
  turns inf into NaN); Mean needs one valid point, Std (ddof=1) two; a window whose
  valid values are all equal has Std exactly 0. (pandas 1.5-2.x zeroed such windows
  by counting equal runs; pandas 3 dropped that and its online Welford update leaves
  a history-dependent residual there, e.g. 2.27 for five zero volumes after ~1e7
  ones -- a numerical artifact the reference does not copy.)
* ``Slope/Rsquare/Resi(x, n)``: Qlib's Cython windows: OLS of y on positions
  1..n, today at position n, NaN points dropped while the others keep their
  positions; fewer than 2 valid points -> NaN; Resi = y_today - (slope*n + b), NaN
  when today is NaN; Rsquare is NaN where ``np.isclose(Std(x, n), 0, atol=2e-5)``.
  (Inputs must be finite or NaN: Qlib's Cython sums are poisoned by an inf.)
* ``Corr(a, b, n)``: pandas rolling Pearson over the points where *both* a and b
  are finite (``a + 0*b`` masks, inf -> NaN); fewer than 2 points or a constant
  side -> NaN; then NaN where either input's own ``Std(., n)`` is within 2e-5 of 0.
* Element-wise arithmetic on stored fields stays float32 (numpy rules), rolling
  outputs are float64, every final expression is cast to float32.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
GUARD_ATOL = 2e-5

FEATURES = ("KLEN", "KLOW", "ROC60", "STD5", "RSQR5", "RSQR10", "RSQR20", "RSQR60",
            "RESI5", "RESI10", "CORR5", "CORR10", "CORR20", "CORR60",
            "CORD5", "CORD10", "CORD60", "VSTD5", "WVMA5", "WVMA60")
LABEL = "LABEL0"


def _windows(x: np.ndarray, n: int):
    """Yield (t, window) with window = x[t-n+1 .. t] left-padded with NaN to length n."""
    x = np.asarray(x, dtype=np.float64)
    pad = np.concatenate([np.full(n - 1, np.nan), x])
    for t in range(len(x)):
        yield t, pad[t:t + n]


def ref_1d(x, n: int) -> np.ndarray:
    """``Ref(x, n)``: value n days earlier (n > 0) or -n days later (n < 0); dtype kept."""
    x = np.asarray(x)
    out = np.full_like(x, np.nan)
    T = len(x)
    for t in range(T):
        s = t - n
        if 0 <= s < T:
            out[t] = x[s]
    return out


def mean_1d(x, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t, w in _windows(x, n):
        v = w[np.isfinite(w)]
        if len(v) >= 1:
            out[t] = v.sum() / len(v)
    return out


def _std(v: np.ndarray) -> float:
    """Sample std (ddof=1) of finite values; exactly 0 when all equal; NaN below 2 points."""
    v = np.asarray(v, dtype=np.float64)
    if len(v) < 2:
        return np.nan
    if np.all(v == v[0]):
        return 0.0
    m = v.sum() / len(v)
    return float(np.sqrt(((v - m) ** 2).sum() / (len(v) - 1)))


def std_1d(x, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t, w in _windows(x, n):
        out[t] = _std(w[np.isfinite(w)])
    return out


def _ols(w: np.ndarray, n: int):
    """(slope, intercept, r2) of the window on positions 1..n, NaN points dropped."""
    pos = np.arange(1, n + 1, dtype=np.float64)
    ok = ~np.isnan(w)
    if ok.sum() < 2:
        return np.nan, np.nan, np.nan
    x, y = pos[ok], w[ok]
    xm = x.sum() / len(x)
    ym = y.sum() / len(y)
    sxx = ((x - xm) ** 2).sum()
    sxy = ((x - xm) * (y - ym)).sum()
    syy = ((y - ym) ** 2).sum() if not np.all(y == y[0]) else 0.0
    slope = sxy / sxx
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = sxy * sxy / (sxx * syy) if syy > 0 else np.nan
    return slope, ym - slope * xm, r2


def slope_1d(x, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t, w in _windows(x, n):
        out[t] = _ols(w, n)[0]
    return out


def _guard(x, n: int) -> np.ndarray:
    """True where Qlib's ``np.isclose(rolling std, 0, atol=2e-5)`` fires."""
    s = std_1d(x, n)
    return np.isfinite(s) & (np.abs(s) <= GUARD_ATOL)


def rsquare_1d(x, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t, w in _windows(x, n):
        out[t] = _ols(w, n)[2]
    out[_guard(x, n)] = np.nan
    return out


def resi_1d(x, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t, w in _windows(x, n):
        if np.isnan(w[-1]):
            continue
        slope, icpt, _ = _ols(w, n)
        out[t] = w[-1] - (slope * n + icpt)
    return out


def corr_1d(a, b, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.full(len(a), np.nan)
    wa, wb = _windows(a, n), _windows(b, n)
    for (t, x), (_, y) in zip(wa, wb):
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
            continue
        dx, dy = x - x.sum() / len(x), y - y.sum() / len(y)
        out[t] = (dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum())
    out[_guard(a, n) | _guard(b, n)] = np.nan
    return out


def alpha158_1d(open, high, low, close, volume) -> dict[str, np.ndarray]:
    """The 20 features and ``LABEL0`` of one stock, each a float32 array.

    Inputs are one stock's stored fields on consecutive calendar days (cast to
    float32 like Qlib's ``.day.bin``), NaN where missing.
    """
    o, h, l, c, v = (np.asarray(a, dtype=F32) for a in (open, high, low, close, volume))
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out["KLEN"] = (h - l) / o
        out["KLOW"] = (np.minimum(o, c) - l) / o
        out["ROC60"] = ref_1d(c, 60) / c
        out["STD5"] = std_1d(c, 5) / c
        for d in (5, 10, 20, 60):
            out[f"RSQR{d}"] = rsquare_1d(c, d)
        for d in (5, 10):
            out[f"RESI{d}"] = resi_1d(c, d) / c
        logv = np.log(v + 1)
        for d in (5, 10, 20, 60):
            out[f"CORR{d}"] = corr_1d(c, logv, d)
        ret = c / ref_1d(c, 1)
        vchg = np.log(v / ref_1d(v, 1) + 1)
        for d in (5, 10, 60):
            out[f"CORD{d}"] = corr_1d(ret, vchg, d)
        out["VSTD5"] = std_1d(v, 5) / (v + 1e-12)
        wv = np.abs(c / ref_1d(c, 1) - 1) * v
        for d in (5, 60):
            out[f"WVMA{d}"] = std_1d(wv, d) / (mean_1d(wv, d) + 1e-12)
        out[LABEL] = ref_1d(c, -2) / ref_1d(c, -1) - 1
    return {k: np.asarray(out[k], dtype=F32) for k in (*FEATURES, LABEL)}


# Qlib expression strings (Alpha158 spelling) for the cross-check against real Qlib.
QLIB_EXPRESSIONS = {
    "KLEN": "($high-$low)/$open",
    "KLOW": "(Less($open, $close)-$low)/$open",
    "ROC60": "Ref($close, 60)/$close",
    "STD5": "Std($close, 5)/$close",
    **{f"RSQR{d}": f"Rsquare($close, {d})" for d in (5, 10, 20, 60)},
    **{f"RESI{d}": f"Resi($close, {d})/$close" for d in (5, 10)},
    **{f"CORR{d}": f"Corr($close, Log($volume+1), {d})" for d in (5, 10, 20, 60)},
    **{f"CORD{d}": f"Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), {d})"
       for d in (5, 10, 60)},
    "VSTD5": "Std($volume, 5)/($volume+1e-12)",
    **{f"WVMA{d}": f"Std(Abs($close/Ref($close, 1)-1)*$volume, {d})/"
                   f"(Mean(Abs($close/Ref($close, 1)-1)*$volume, {d})+1e-12)" for d in (5, 60)},
    LABEL: "Ref($close, -2)/Ref($close, -1) - 1",
}
assert tuple(QLIB_EXPRESSIONS) == (*FEATURES, LABEL)
