"""Rank IC (eqs. 20-21) and Rank ICIR."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def daily_rank_ic(pred: np.ndarray, label: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Eq. (20) for each day: Pearson correlation of the average ranks of the prediction
    and of the raw label over the day's stocks (Spearman). Stocks with a NaN label are
    left out; a day with fewer than 2 of them, or a constant side, gives NaN.

    ``pred``, ``label``: (n,) in the day-major order of ``offsets`` (n_days + 1,).
    """
    out = np.full(len(offsets) - 1, np.nan)
    for k, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        ok = np.isfinite(label[a:b])
        if ok.sum() < 2:
            continue
        rp, rl = rankdata(pred[a:b][ok]), rankdata(label[a:b][ok])
        rp, rl = rp - rp.mean(), rl - rl.mean()
        den = np.sqrt((rp * rp).sum() * (rl * rl).sum())
        if den > 0:
            out[k] = (rp * rl).sum() / den
    return out


def summarize(daily_ic: np.ndarray) -> dict:
    """Eq. (21) Rank IC = mean of the daily values; Rank ICIR = mean / std (ddof 1, as
    Qlib's ``ic.mean() / ic.std()``). NaN days are left out."""
    ic = daily_ic[np.isfinite(daily_ic)]
    std = ic.std(ddof=1) if len(ic) > 1 else np.nan
    return {"rank_ic": float(ic.mean()) if len(ic) else float("nan"),
            "rank_icir": float(ic.mean() / std) if std and np.isfinite(std) else float("nan"),
            "days": int(len(ic))}
