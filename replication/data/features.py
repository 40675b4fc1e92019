"""Qlib Alpha158, the 20-feature subset the paper uses, and its label.

The 20 features in Alpha158's own column order (this order is the model's C axis):

======  =====================================================================
KLEN    ($high-$low)/$open
KLOW    (Less($open, $close)-$low)/$open
ROC60   Ref($close, 60)/$close            (past over current, Qlib's convention)
STD5    Std($close, 5)/$close
RSQRd   Rsquare($close, d)                d = 5, 10, 20, 60
RESId   Resi($close, d)/$close            d = 5, 10
CORRd   Corr($close, Log($volume+1), d)   d = 5, 10, 20, 60
CORDd   Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), d)   d = 5, 10, 60
VSTD5   Std($volume, 5)/($volume+1e-12)
WVMAd   Std(Abs($close/Ref($close, 1)-1)*$volume, d)
        / (Mean(Abs($close/Ref($close, 1)-1)*$volume, d)+1e-12)             d = 5, 60
======  =====================================================================

Label ``LABEL0 = Ref($close, -2)/Ref($close, -1) - 1``: the return from the next close
to the one after (a signal computed at day s's close can first trade at s+1's close).

Dtypes follow Qlib: element-wise expressions stay float32 (the ``.bin`` dtype), rolling
operators compute in float64, and every result is cast to float32.
"""
from __future__ import annotations

import numpy as np

from replication.data import ops

FEATURES = ("KLEN", "KLOW", "ROC60", "STD5", "RSQR5", "RSQR10", "RSQR20", "RSQR60",
            "RESI5", "RESI10", "CORR5", "CORR10", "CORR20", "CORR60", "CORD5", "CORD10",
            "CORD60", "VSTD5", "WVMA5", "WVMA60")
LABEL = "LABEL0"
LOOKBACK = 60  # days of history the deepest expression reads (Ref 60; Ref 1 + 60-day windows)
HORIZON = 2  # days of future the label reads


def alpha158_arrays(open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                    volume: np.ndarray) -> dict[str, np.ndarray]:
    """The 20 features and the label on a dense panel.

    Parameters
    ----------
    open, high, low, close, volume : (D, S) float32, NaN where missing.

    Returns
    -------
    dict name -> (D, S) float32, keys ``FEATURES`` then ``LABEL``.
    """
    f32 = [np.asarray(a, dtype=np.float32) for a in (open, high, low, close, volume)]
    o, h, lo, c, v = f32
    out: dict[str, np.ndarray] = {}
    mc = ops.Rolling(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["KLEN"] = (h - lo) / o
        out["KLOW"] = (np.minimum(o, c) - lo) / o
        out["ROC60"] = ops.ref(c, 60) / c
        out["STD5"] = mc.std(5) / c
        for d in (5, 10, 20, 60):
            out[f"RSQR{d}"] = ops.rolling_rsquare(c, d, mc)
        for d in (5, 10):
            out[f"RESI{d}"] = ops.rolling_resi(c, d, mc) / c
        logv = np.log(v + np.float32(1))
        mlogv = ops.Rolling(logv)
        for d in (5, 10, 20, 60):
            out[f"CORR{d}"] = ops.rolling_corr(c, logv, d, mc, mlogv)
        ret = c / ops.ref(c, 1)
        dlogv = np.log(v / ops.ref(v, 1) + np.float32(1))
        mret, mdlogv = ops.Rolling(ret), ops.Rolling(dlogv)
        for d in (5, 10, 60):
            out[f"CORD{d}"] = ops.rolling_corr(ret, dlogv, d, mret, mdlogv)
        out["VSTD5"] = ops.rolling_std(v, 5) / (v + np.float32(1e-12))
        w = np.abs(ret - np.float32(1)) * v
        mw = ops.Rolling(w)
        for d in (5, 60):
            out[f"WVMA{d}"] = mw.std(d) / (mw.mean(d) + 1e-12)
        out[LABEL] = ops.ref(c, -2) / ops.ref(c, -1) - np.float32(1)
    return {k: out[k].astype(np.float32, copy=False) for k in (*FEATURES, LABEL)}


def feature_panel(market, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and label for calendar days ``[i0, i1)`` of ``market``.

    Computed on ``LOOKBACK`` days of real history before ``i0`` and ``HORIZON`` days after
    ``i1`` where the calendar has them, which gives exactly the values of a computation
    over the whole history (every window reads at most ``LOOKBACK`` days back).

    Returns
    -------
    x : (i1 - i0, S, 20) float32, columns ``FEATURES``.
    label : (i1 - i0, S) float32.
    """
    a, b = max(0, i0 - LOOKBACK), min(len(market.calendar), i1 + HORIZON)
    f = market.fields
    arrays = alpha158_arrays(*(f[k][a:b] for k in ("open", "high", "low", "close", "volume")))
    label = arrays.pop(LABEL)[i0 - a:i1 - a]
    x = np.empty(label.shape + (len(FEATURES),), dtype=np.float32)
    for k, name in enumerate(FEATURES):
        x[..., k] = arrays.pop(name)[i0 - a:i1 - a]  # pop: free each (D, S) array once copied
    return x, label


def alpha158(provider=None, instruments="all", start=None, end=None):
    """Raw Alpha158-20 features and ``LABEL0``, before any processor (Qlib's ``D.features``).

    Parameters
    ----------
    provider : Qlib provider directory or pack file; default ``$QLIB_DATA`` or
        ``~/.qlib/qlib_data/cn_data``. A :class:`~replication.data.provider.Market`
        already in memory is accepted too.
    instruments : a market name (``"all"``, ``"csi300"``: its membership spells select
        the rows, applied after computing on the full history) or a list of codes.
    start, end : inclusive date range (default: the whole calendar).

    Returns
    -------
    pandas.DataFrame indexed by (datetime, instrument), columns ``FEATURES + (LABEL,)``,
    float32; one row per stock-day inside the stock's stored range, its membership and
    ``[start, end]``.
    """
    import pandas as pd

    from replication.data.provider import Market, load_market

    fields = ("open", "high", "low", "close", "volume")
    if isinstance(provider, Market):
        market = provider
        if not isinstance(instruments, str):
            market = market.select(sorted({c.upper() for c in instruments}))
    else:
        market = load_market(provider, fields, instruments)
    i0, i1 = market.date_range(start, end)
    rows = market.stored(i0, i1)
    if isinstance(instruments, str):
        rows &= market.membership(instruments, i0, i1)
    x, label = feature_panel(market, i0, i1)
    d, s = np.nonzero(rows)
    values = np.concatenate([x[d, s], label[d, s, None]], axis=1)
    index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(market.calendar[i0:i1][d]), market.codes[s]],
        names=["datetime", "instrument"])
    return pd.DataFrame(values, index=index, columns=[*FEATURES, LABEL])
