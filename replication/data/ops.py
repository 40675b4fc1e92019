"""Qlib's expression operators, vectorised over a dense ``(days, stocks)`` panel.

Every rolling operator works along axis 0 on a window of ``n`` days that **includes
today**, with ``min_periods=1`` (Qlib's ``Rolling`` operators). Semantics follow Qlib
(``qlib/data/ops.py``, ``_libs/rolling.pyx``) and the pandas rolling kernels it calls:

* NaN points are skipped; pandas also treats ``±inf`` as missing inside rolling windows.
* ``Std`` has ``ddof=1`` (one valid point gives NaN) and is exactly 0 when all valid
  points of the window are equal. That is the exact value, and what pandas < 3 returned
  (its "consecutive same value" rule); pandas 3's online update can leave a round-off
  residue there that depends on where the series starts, which Qlib then divides by
  1e-12 in VSTD5/WVMA (``tests/crosscheck_qlib.py`` measures the difference).
* ``Slope``/``Resi``/``Rsquare`` regress on positions ``1..n`` (today at ``n``); a NaN
  point is dropped but the others keep their positions.
* ``Rsquare`` and ``Corr`` are NaN where the rolling std of an input is within 2e-5 of 0.

How: window sums are differences of float64 prefix sums that restart every ``BLOCK``
days (one cumsum per quantity, shared by every window length, rounding bounded by the
block). Central second moments obtained as ``sum(x^2) - sum(x)^2 / count`` lose
precision when a window is nearly constant (a suspended stock's repeated close, say),
so every window whose spread is below ``1e-7 * count * mean^2`` is recomputed exactly
by a two-pass formula over its own points; that also makes constant windows exactly 0,
as in pandas.
"""
from __future__ import annotations

import numpy as np

STD_GUARD = 2e-5  # Qlib: np.isclose(rolling std, 0, atol=2e-5) -> NaN in Rsquare and Corr
ILL_CONDITIONED = 1e-7  # relative spread below which a window's moments are recomputed exactly
_CHUNK = 1 << 18  # windows recomputed per batch (bounds memory)


def ref(x: np.ndarray, n: int) -> np.ndarray:
    """Qlib ``Ref(x, n)``: the value ``n`` days earlier (``n < 0``: later); NaN beyond the edge."""
    out = np.full_like(x, np.nan)
    if n > 0:
        out[n:] = x[:-n]
    elif n < 0:
        out[:n] = x[-n:]
    else:
        out[:] = x
    return out


BLOCK = 64  # prefix sums restart every BLOCK days (>= the longest window)


class _Prefix:
    """Block-local inclusive prefix sums of a ``(D, S)`` array along axis 0.

    Restarting the running sum every ``BLOCK`` days keeps its magnitude, hence the
    rounding error of any window sum, bounded by ``BLOCK`` points instead of growing
    with the length of the series (as a global cumsum's would).
    """

    def __init__(self, a: np.ndarray):
        d = a.shape[0]
        nb = -(-d // BLOCK)
        blocks = np.zeros((nb * BLOCK,) + a.shape[1:], dtype=np.float64)
        blocks[:d] = a
        blocks = blocks.reshape(nb, BLOCK, *a.shape[1:])
        np.cumsum(blocks, axis=1, out=blocks)
        self.total = blocks[:, -1]  # (nb, S) block sums
        self.local = blocks.reshape(nb * BLOCK, *a.shape[1:])[:d]

    def window(self, n: int) -> np.ndarray:
        """Sums over ``[t-n+1, t]`` (days before 0 count as 0): (D, S)."""
        if not 1 <= n <= BLOCK:
            raise ValueError(f"window {n} outside 1..{BLOCK}")
        out = self.local.copy()
        out[n:] -= self.local[:-n]
        t = np.arange(n, len(out))
        cross = t[t // BLOCK != (t - n) // BLOCK]  # window starts in the previous block
        out[cross] += self.total[(cross - n) // BLOCK]
        return out


def _windows(x: np.ndarray, ok: np.ndarray, d: np.ndarray, s: np.ndarray, n: int) -> np.ndarray:
    """The points of the windows ending at cells ``(d, s)``: (k, n) float64, NaN where missing."""
    rows = d[:, None] + np.arange(1 - n, 1)  # (k, n), today last
    inside = rows >= 0
    rows = np.maximum(rows, 0)
    cols = s[:, None]
    return np.where(inside & ok[rows, cols], x[rows, cols], np.nan).astype(np.float64)


class Rolling:
    """Rolling window statistics of one ``(D, S)`` series for any window length.

    Prefix sums are computed once per quantity and cached, so ``Std(x, 5)`` and
    ``Std(x, 60)`` share them. ``mask`` restricts the points further (pairwise
    deletion for ``Corr``).
    """

    def __init__(self, x: np.ndarray, mask: np.ndarray | None = None):
        self.raw = np.asarray(x)
        self.ok = np.isfinite(self.raw) if mask is None else np.isfinite(self.raw) & mask
        self.x = np.where(self.ok, self.raw, 0.0).astype(np.float64)
        self._p: dict[str, _Prefix] = {}
        self._m2: dict[int, np.ndarray] = {}
        self._bad: dict[int, np.ndarray] = {}

    def _sum(self, what: str, n: int) -> np.ndarray:
        if what not in self._p:
            tau = np.arange(self.x.shape[0], dtype=np.float64)[:, None]
            self._p[what] = _Prefix({
                "count": lambda: self.ok.astype(np.float64),
                "x": lambda: self.x,
                "xx": lambda: self.x * self.x,
                "tau": lambda: np.where(self.ok, tau, 0.0),
                "tautau": lambda: np.where(self.ok, tau * tau, 0.0),
                "taux": lambda: tau * self.x,
            }[what]())
        return self._p[what].window(n)

    def count(self, n: int) -> np.ndarray:
        return self._sum("count", n)

    def mean(self, n: int) -> np.ndarray:
        """Qlib ``Mean(x, n)``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._sum("x", n) / self.count(n)

    def ill_conditioned(self, n: int) -> np.ndarray:
        """(D, S) bool: windows of >= 2 points whose moments need the exact recomputation."""
        self.m2(n)
        return self._bad[n]

    def m2(self, n: int) -> np.ndarray:
        """Sum of squared deviations from the window mean (NaN for < 2 points)."""
        if n not in self._m2:
            c, s, ss = self.count(n), self._sum("x", n), self._sum("xx", n)
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = s * s / c
                m2 = ss - scale
            bad = (c >= 2) & ~(m2 > ILL_CONDITIONED * scale)
            for d, j in _chunks(bad):
                w = _windows(self.raw, self.ok, d, j, n)
                m2[d, j] = np.nansum((w - np.nanmean(w, axis=1, keepdims=True)) ** 2, axis=1)
            m2 = np.maximum(m2, 0.0)
            m2[c < 2] = np.nan
            self._m2[n], self._bad[n] = m2, bad
        return self._m2[n]

    def var(self, n: int) -> np.ndarray:
        return self.m2(n) / (self.count(n) - 1)

    def std(self, n: int) -> np.ndarray:
        """Qlib ``Std(x, n)`` (ddof=1)."""
        return np.sqrt(self.var(n))


def _chunks(mask: np.ndarray):
    d, s = np.nonzero(mask)
    for k in range(0, len(d), _CHUNK):
        yield d[k:k + _CHUNK], s[k:k + _CHUNK]


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Qlib ``Mean(x, n)``."""
    return Rolling(x).mean(n)


def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Qlib ``Std(x, n)`` (ddof=1)."""
    return Rolling(x).std(n)


def _near_zero(std: np.ndarray) -> np.ndarray:
    return np.abs(std) <= STD_GUARD  # np.isclose(std, 0, atol=2e-5); NaN -> False


def _regression(r: Rolling, n: int):
    """OLS of the series on positions 1..n in each window.

    Returns count N, mean position, mean y, Cxy = sum (i - i_mean)(y - y_mean) and
    Cxx = sum (i - i_mean)^2. A point on day tau has position ``tau - (t - n)`` in the
    window ending at ``t``, so position sums follow from window sums of tau, tau^2, tau*y.
    """
    shift = np.arange(r.x.shape[0], dtype=np.float64)[:, None] - n
    c, sy = r.count(n), r._sum("x", n)
    st, stt, sty = r._sum("tau", n), r._sum("tautau", n), r._sum("taux", n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = st / c - shift
        my = sy / c
        cxx = stt - 2 * shift * st + shift * shift * c - c * mx * mx
        cxy = sty - shift * sy - c * mx * my
    for d, j in _chunks(r.ill_conditioned(n)):
        w = _windows(r.raw, r.ok, d, j, n)
        pos = np.where(np.isnan(w), np.nan, np.arange(1.0, n + 1))
        cxy[d, j] = np.nansum((pos - np.nanmean(pos, axis=1, keepdims=True))
                              * (w - np.nanmean(w, axis=1, keepdims=True)), axis=1)
    return c, mx, my, cxy, cxx


def rolling_slope(y: np.ndarray, n: int, r: Rolling | None = None) -> np.ndarray:
    """Qlib ``Slope(y, n)``."""
    _, _, _, cxy, cxx = _regression(r or Rolling(y), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cxy / cxx


def rolling_resi(y: np.ndarray, n: int, r: Rolling | None = None) -> np.ndarray:
    """Qlib ``Resi(y, n)`` = y_today - (slope * n + intercept); NaN if today is NaN."""
    _, mx, my, cxy, cxx = _regression(r or Rolling(y), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = cxy / cxx
        return y - (my + slope * (n - mx))


def rolling_rsquare(y: np.ndarray, n: int, r: Rolling | None = None) -> np.ndarray:
    """Qlib ``Rsquare(y, n)``; NaN where ``Std(y, n)`` is within 2e-5 of 0."""
    r = r or Rolling(y)
    _, _, _, cxy, cxx = _regression(r, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = cxy * cxy / (cxx * r.m2(n))
    r2[_near_zero(r.std(n))] = np.nan
    return r2


def rolling_corr(a: np.ndarray, b: np.ndarray, n: int,
                 ra: Rolling | None = None, rb: Rolling | None = None) -> np.ndarray:
    """Qlib ``Corr(a, b, n)``: pandas' rolling Pearson over pairwise-complete points,
    NaN where ``Std(a, n)`` or ``Std(b, n)`` is within 2e-5 of 0."""
    ra, rb = ra or Rolling(a), rb or Rolling(b)
    both = ra.ok & rb.ok
    # pandas masks each input where the other is missing (``a + 0 * b``)
    pa = ra if np.array_equal(both, ra.ok) else Rolling(a, both)
    pb = rb if np.array_equal(both, rb.ok) else Rolling(b, both)
    c = pa.count(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        cab = _Prefix(pa.x * pb.x).window(n) - pa._sum("x", n) * pb._sum("x", n) / c
    for d, j in _chunks(pa.ill_conditioned(n) | pb.ill_conditioned(n)):
        wa, wb = _windows(pa.raw, pa.ok, d, j, n), _windows(pb.raw, pb.ok, d, j, n)
        cab[d, j] = np.nansum((wa - np.nanmean(wa, axis=1, keepdims=True))
                              * (wb - np.nanmean(wb, axis=1, keepdims=True)), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cab / np.sqrt(pa.m2(n) * pb.m2(n))
    out[_near_zero(ra.std(n)) | _near_zero(rb.std(n))] = np.nan
    return out
