"""A synthetic A-share market in Qlib's provider format, with a known generating model.

It is the repository's embedded data set for tests and smoke runs: no download, a
few seconds to build, byte-identical for a seed. ::

    python -m replication.synthetic --out DIR [--stocks 200] [--days 600] [--seed 0]

The generating model is a dynamic factor model in the spirit of FactorVAE::

    r[i, t+1] = alpha[i, t] + beta[i, t] . z[t+1] + sigma[i, t] * eps[i, t+1]

- ``z`` are K = 3 latent factor returns: a market factor (mean 0) and two AR(1) factors
  with non-zero mean, so their conditional mean ``E_t z[t+1]`` moves from day to day.
- ``alpha`` and ``beta`` are functions of characteristics each stock shows in its own
  OHLCV up to day t (the information Alpha158 features see): 5-day return (reversal),
  20-day volatility, 10-day intraday range, 60-day momentum and 5- vs 20-day volume
  trend, each z-scored across stocks.
- ``sigma`` is stock-specific and clusters (log-AR(1)); ``eps`` is Student-t, so
  +-10% limit days happen (about 0.5% of stock-days).

``E_t r[i, t+1] = alpha + beta . E_t z[t+1]`` is saved in ``truth.npz`` with the
factors; its mean daily Rank IC against realised returns is about 0.08 (0.08-0.1
across seeds): predictable, but about as noisy as a real market.

Around the model the market has A-share mechanics: raw prices in integer cents, the
+-10% limit on the (ex-rights) reference price, dividends and bonus-share splits that
change the adjustment factor, suspensions (NaN rows, as Qlib's Yahoo data stores
them), late listings and early delistings, a CSI300-like index with its own
membership re-balanced every 120 days, and Qlib's price normalisation (adjusted
close = 1.0 on a series' first day; adjusted = raw x factor, volume = raw / factor).
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

VERSION = 1  # bump when the generator changes, so stale directories are rebuilt
MARKER = "synthetic.json"  # written last: its presence means the directory is complete
INDEX = "SH000300"
FACTORS = ("market", "momentum", "volume_trend")


@dataclass(frozen=True)
class Spec:
    """Everything that determines the generated market (all of it goes in the marker)."""

    n_stocks: int = 200
    n_days: int = 600
    seed: int = 0
    start: str = "2016-01-04"
    burn_in: int = 80  # simulated, unwritten days: 60-day windows are full on day 0
    # --- returns -----------------------------------------------------------------
    idio_vol: tuple[float, float] = (0.012, 0.028)  # range of stocks' base daily idio vol
    vol_persist: float = 0.97  # AR(1) of log idio vol: volatility clusters
    vol_shock: float = 0.06  # its innovation sd (stationary sd ~0.25, i.e. +-28%)
    t_df: float = 4.0  # Student-t tails of eps: limit days ~0.5% of stock-days
    factor_mean: tuple[float, ...] = (0.0, 0.0006, -0.0005)  # daily means of z
    factor_persist: tuple[float, ...] = (0.0, 0.15, 0.15)  # AR(1) of z around its mean
    factor_sd: tuple[float, ...] = (0.012, 0.004, 0.003)  # innovation sd of z
    beta_vol: float = 0.25  # market beta = 1 + beta_vol * z(20-day volatility)
    a_rev: float = 0.0012  # alpha per sd of 5-day return (negative: reversal)
    a_range: float = 0.0006  # alpha per sd of intraday range (negative: lottery stocks)
    a_vol: float = 0.0003  # alpha per sd of 20-day volatility (negative: low-vol anomaly)
    # --- prices and volumes --------------------------------------------------------
    limit: float = 0.10  # daily price limit on the reference price
    gap_share: float = 0.3  # share of the day's return already in the open
    gap_noise: float = 0.25  # open noise, in units of the day's sigma
    wick: float = 0.5  # scale of high/low beyond max/min(open, close), in sigma
    turnover: float = 0.01  # mean daily turnover (share of shares outstanding)
    turnover_persist: float = 0.9  # AR(1) of log turnover: volume trends
    turnover_shock: float = 0.15  # its innovation sd
    volume_abs_ret: float = 0.5  # volume rises by this per sigma of |return|
    volume_noise: float = 0.2  # day-to-day lognormal noise of volume
    # --- events ----------------------------------------------------------------------
    dividend_rate: float = 1 / 250  # ex-dividend events per stock-day (about yearly)
    split_rate: float = 1 / 1500  # bonus-share events per stock-day
    suspension_rate: float = 1 / 2000  # suspension spells per stock-day
    suspension_len: tuple[int, int] = (2, 15)  # spell length range, trading days
    late_frac: float = 0.05  # stocks listed after the first day
    delist_frac: float = 0.03  # stocks delisted before the last day
    # --- index -----------------------------------------------------------------------
    member_frac: float = 1 / 3  # index members: the largest third by 20-day mean cap
    rebalance: int = 120  # trading days between membership re-balances
    min_age: int = 60  # trading days listed before a stock can join
    index_base: float = 3000.0  # index level before the first day


def calendar(n_days: int = 600, start: str = "2016-01-04") -> np.ndarray:
    """The synthetic trading calendar: ``n_days`` weekdays from ``start`` (datetime64[D])."""
    first = np.busday_offset(np.datetime64(start, "D"), 0, roll="forward")
    return np.busday_offset(first, np.arange(n_days))


def split(n_days: int = 600, start: str = "2016-01-04") -> dict[str, tuple[str, str]]:
    """Train / valid / test date ranges on the synthetic calendar: 60% / 20% / 20% of days.

    The test range stops two days before the calendar ends: the label of day s reads
    the closes of s+1 and s+2.

    Returns
    -------
    ``{"train": (start, end), "valid": ..., "test": ...}``, inclusive ISO dates.
    """
    cal = [str(d) for d in calendar(n_days, start)]
    a, b = int(round(0.6 * n_days)), int(round(0.8 * n_days))
    return {"train": (cal[0], cal[a - 1]), "valid": (cal[a], cal[b - 1]),
            "test": (cal[b], cal[-3])}


def stock_codes(n: int) -> list[str]:
    """``n`` codes alternating Shanghai SH600000+i and Shenzhen SZ000001+i, sorted."""
    return sorted(f"SH{600000 + i // 2}" if i % 2 == 0 else f"SZ{1 + i // 2:06d}"
                  for i in range(n))


# ---------------------------------------------------------------------------------------
# simulation


def _window(x: np.ndarray, t: int, n: int, min_obs: int, how: str) -> np.ndarray:
    """NaN-aware mean / sum / std of rows ``[t-n, t)`` of ``x``; NaN under ``min_obs`` values."""
    w = x[max(0, t - n):t]
    ok = np.isfinite(w)
    cnt = ok.sum(0)
    w = np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = w.sum(0) / cnt
        if how == "sum":
            out = w.sum(0)
        elif how == "std":
            out = np.sqrt(np.maximum((w * w).sum(0) / cnt - mean**2, 0.0))
        else:
            out = mean
    return np.where(cnt >= min_obs, out, np.nan)


def _zscore(x: np.ndarray) -> np.ndarray:
    """Cross-sectional z-score clipped at +-3; stocks without a value get 0 (the average)."""
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.zeros_like(x)
    sd = x[ok].std()
    z = (x - x[ok].mean()) / (sd if sd > 0 else 1.0)
    return np.where(ok, np.clip(z, -3, 3), 0.0)


def _cents(x):
    return np.floor(np.asarray(x) + 0.5)  # round half up, as exchanges do


def simulate(p: Spec) -> dict[str, np.ndarray]:
    """Run the generating model.

    Returns raw (T, S) arrays over ``T = burn_in + n_days`` simulated days, NaN where a
    stock does not trade: ``open high low close`` (cents), ``volume`` (shares),
    ``factor`` (un-normalised), ``cap``; per-stock ``first``, ``last`` (simulated day
    index of the stored range); and the truth ``mu``, ``alpha``, ``beta``, ``z``, ``zmean``.
    """
    rng = np.random.default_rng(p.seed)
    S, B, D = p.n_stocks, p.burn_in, p.n_days
    T, K = B + D, len(p.factor_mean)
    f_mean, f_phi, f_sd = (np.array(v, dtype=float) for v in
                           (p.factor_mean, p.factor_persist, p.factor_sd))

    # stock constants: base volatility, size and turnover (independent of each other)
    sigma0 = rng.uniform(*p.idio_vol, S)
    shares = np.exp(rng.normal(np.log(2e9), 0.9, S))
    turnover0 = p.turnover * np.exp(rng.normal(0.0, 0.4, S))
    price0 = np.maximum(_cents(np.exp(rng.normal(np.log(1500), 0.5, S))), 300.0)

    # life: a few stocks list late / delist early (disjoint sets, at least one of each)
    first, last = np.zeros(S, dtype=np.int64), np.full(S, T - 1, dtype=np.int64)
    order = rng.permutation(S)
    n_late = max(1, int(round(p.late_frac * S)))
    n_del = max(1, int(round(p.delist_frac * S)))
    late, dele = order[:n_late], order[n_late:n_late + n_del]
    first[late] = B + rng.integers(int(0.05 * D) + 1, int(0.6 * D), n_late)
    last[dele] = B + rng.integers(int(0.5 * D), int(0.95 * D), n_del)

    # suspension spells, inside the written range and never on its first/last day, so
    # each stored series starts and ends with a traded day
    susp = np.zeros((T, S), dtype=bool)
    n_spells = max(1, int(round(p.suspension_rate * S * D)))
    for i in rng.integers(0, S, n_spells):
        length = int(rng.integers(p.suspension_len[0], p.suspension_len[1] + 1))
        lo, hi = max(first[i], B) + 1, last[i] - length
        if hi > lo:
            a = int(rng.integers(lo, hi))
            susp[a:a + length, i] = True
    dividend = rng.random((T, S)) < p.dividend_rate
    split_day = rng.random((T, S)) < p.split_rate

    def nan() -> np.ndarray:
        return np.full((T, S), np.nan)

    o, h, lo_, c, vol, fac, cap = (nan() for _ in range(7))
    lret, hl, lvol = nan(), nan(), nan()  # observable history the characteristics use
    mu, alpha_h = nan(), nan()
    beta_h = np.full((T, S, K), np.nan)
    z_h, zm_h = np.zeros((T, K)), np.zeros((T, K))

    prev = price0.copy()  # last traded raw close (cents); the IPO price before listing
    fac_now = np.ones(S)
    logvol_state = rng.normal(0.0, 0.1, S)  # h: log idio-vol deviation
    turn_state = np.zeros(S)  # log turnover deviation
    z_prev = f_mean.copy()
    trade_prev = np.zeros(S, dtype=bool)
    t_scale = np.sqrt((p.t_df - 2) / p.t_df)  # unit-variance Student-t
    ones = np.ones(S)

    for t in range(T):
        alive = (first <= t) & (t <= last)
        trade = alive & ~susp[t]
        listing = first == t

        # characteristics from the stock's own history up to the close of t-1
        rev = _zscore(_window(lret, t, 5, 3, "sum"))
        vola = _zscore(_window(lret, t, 20, 10, "std"))
        rng10 = _zscore(_window(hl, t, 10, 5, "mean"))
        mom = _zscore(_window(lret, t, 60, 40, "sum"))
        vtr = _zscore(_window(lvol, t, 5, 3, "mean") - _window(lvol, t, 20, 10, "mean"))
        alpha = -p.a_rev * rev - p.a_range * rng10 - p.a_vol * vola
        beta = np.stack([ones + p.beta_vol * vola, mom, vtr], axis=1)
        zmean = f_mean + f_phi * (z_prev - f_mean)  # E_{t-1} z_t
        if t > 0:
            known = trade_prev & alive  # traded at t-1 and still listed at t
            mu[t - 1] = np.where(known, alpha + beta @ zmean, np.nan)
            alpha_h[t - 1], beta_h[t - 1], zm_h[t - 1] = alpha, beta, zmean

        # realise day t
        z = zmean + f_sd * rng.standard_normal(K)
        logvol_state = p.vol_persist * logvol_state + p.vol_shock * rng.standard_normal(S)
        sig = sigma0 * np.exp(logvol_state)
        eps = rng.standard_t(p.t_df, S) * t_scale
        r = alpha + beta @ z + sig * eps
        z_h[t], z_prev, trade_prev = z, z, trade

        # ex-rights reference price: dividends lower it, bonus shares divide it; the
        # factor absorbs the jump so adjusted prices stay continuous
        ref = prev.copy()
        ev = trade & ~listing
        d = ev & dividend[t]
        cash = np.maximum(1.0, _cents(prev[d] * rng.uniform(0.005, 0.03, d.sum())))
        ref[d] = np.maximum(1.0, ref[d] - cash)
        s = ev & split_day[t]
        ratio = rng.choice([1.3, 1.5, 2.0], s.sum())
        ref[s] = np.maximum(1.0, _cents(ref[s] / ratio))
        shares[s] *= ratio
        fac_now = np.where(ev, fac_now * prev / ref, fac_now)

        up, dn = _cents(ref * (1 + p.limit)), _cents(ref * (1 - p.limit))
        close = np.clip(_cents(ref * (1 + r)), dn, up)
        gap = p.gap_share * r + p.gap_noise * sig * rng.standard_normal(S)
        opn = np.clip(_cents(ref * (1 + gap)), dn, up)
        top, bot = np.maximum(opn, close), np.minimum(opn, close)
        high = np.clip(_cents(top * (1 + p.wick * sig * np.abs(rng.standard_normal(S)))), top, up)
        low = np.clip(_cents(bot * (1 - p.wick * sig * np.abs(rng.standard_normal(S)))), dn, bot)
        realised = close / ref - 1

        # volume: persistent turnover, more trading on big moves, in board lots of 100
        turn_state = p.turnover_persist * turn_state + p.turnover_shock * rng.standard_normal(S)
        v = shares * turnover0 * np.exp(turn_state + p.volume_noise * rng.standard_normal(S)) \
            * (1 + p.volume_abs_ret * np.abs(realised) / sigma0)
        v = np.maximum(100.0, 100.0 * _cents(v / 100.0))

        tr = trade
        o[t, tr], h[t, tr], lo_[t, tr], c[t, tr] = opn[tr], high[tr], low[tr], close[tr]
        vol[t, tr], fac[t, tr] = v[tr], fac_now[tr]
        cap[t, tr] = close[tr] * shares[tr]
        lret[t] = np.where(tr & ~listing, np.log1p(realised), np.nan)
        hl[t] = np.where(tr, (high - low) / opn, np.nan)
        lvol[t] = np.where(tr, np.log(v / fac_now), np.nan)  # adjusted volume, as stored
        prev = np.where(tr, close, prev)

    return dict(open=o, high=h, low=lo_, close=c, volume=vol, factor=fac, cap=cap,
                first=first, last=last, mu=mu, alpha=alpha_h, beta=beta_h, z=z_h, zmean=zm_h)


def _membership(p: Spec, sim: dict) -> np.ndarray:
    """(n_days, S) bool index membership: the largest ``member_frac`` by 20-day mean cap
    among eligible stocks, fixed between re-balance days, ending at a delisting."""
    B, D, S = p.burn_in, p.n_days, p.n_stocks
    first, last, cap = sim["first"], sim["last"], sim["cap"]
    k = max(1, int(round(p.member_frac * S)))
    out = np.zeros((D, S), dtype=bool)
    for rb in range(0, D, p.rebalance):
        t = B + rb
        size = _window(cap, t + 1, 20, 5, "mean")
        # like CSI's rules: seasoned, not leaving, and trading on the re-balance day
        size[(first > t - p.min_age) | (last <= t) | ~np.isfinite(cap[t])] = np.nan
        ok = np.flatnonzero(np.isfinite(size))
        top = ok[np.argsort(-size[ok], kind="stable")[:k]]
        out[rb:rb + p.rebalance, top] = True
    days = B + np.arange(D)[:, None]
    return out & (days <= last[None, :])


def _index(p: Spec, sim: dict, member: np.ndarray) -> dict[str, np.ndarray]:
    """Cap-weighted index of the members: each day's open/close/high/low moves are the
    members' moves (vs their previous traded close) weighted by the previous day's cap."""
    B = p.burn_in
    adj = {k: sim[k] * sim["factor"] for k in ("open", "high", "low", "close")}
    prev_close = _ffill(adj["close"])[B - 1:-1]
    prev_cap = _ffill(sim["cap"])[B - 1:-1]
    w = np.where(member, np.nan_to_num(prev_cap), 0.0)
    w /= w.sum(1, keepdims=True)
    cur = {k: v[B:] for k, v in adj.items()}
    top = np.fmax(cur["open"], cur["close"])
    bot = np.fmin(cur["open"], cur["close"])
    with np.errstate(invalid="ignore"):
        moves = {"close": cur["close"] / prev_close - 1, "open": cur["open"] / prev_close - 1,
                 "high": cur["high"] / top - 1, "low": 1 - cur["low"] / bot}
    wm = {k: (w * np.nan_to_num(v)).sum(1) for k, v in moves.items()}  # suspended: 0
    close = p.index_base * np.cumprod(1 + wm["close"])
    prev_lvl = np.concatenate([[p.index_base], close[:-1]])
    opn = prev_lvl * (1 + wm["open"])
    out = {"close": _cents(close * 100) / 100, "open": _cents(opn * 100) / 100}
    out["high"] = np.maximum(_cents(np.maximum(opn, close) * (1 + wm["high"]) * 100) / 100,
                             np.maximum(out["open"], out["close"]))
    out["low"] = np.minimum(_cents(np.minimum(opn, close) * (1 - wm["low"]) * 100) / 100,
                            np.minimum(out["open"], out["close"]))
    vol = np.where(member, np.nan_to_num(sim["volume"][B:]), 0.0).sum(1)
    out["volume"] = np.maximum(vol, 100.0)
    out["factor"] = np.ones_like(close)
    out["change"] = 100 * (out["close"] / np.concatenate([[p.index_base], out["close"][:-1]]) - 1)
    return out


def _ffill(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down the rows (the last traded value)."""
    idx = np.where(np.isfinite(x), np.arange(len(x))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return x[idx, np.arange(x.shape[1])]


# ---------------------------------------------------------------------------------------
# writing


def _spells(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) index runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def _write_bin(path: Path, start: int, values: np.ndarray) -> None:
    np.concatenate([[start], values]).astype("<f4").tofile(path)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps (np.savez stamps the current time, which
    would break byte-identical output)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                        buf.getvalue())


def _write(p: Spec, root: Path) -> None:
    """Generate the market and write the provider directory under ``root``."""
    sim = simulate(p)
    B, D = p.burn_in, p.n_days
    cal = calendar(D, p.start)
    days = cal.astype(str)
    codes = stock_codes(p.n_stocks)
    member = _membership(p, sim)
    (root / "calendars").mkdir(parents=True)
    (root / "instruments").mkdir()
    (root / "calendars" / "day.txt").write_text("\n".join(days) + "\n")

    adj_close = sim["close"] * sim["factor"]
    with np.errstate(invalid="ignore"):
        change = 100 * (adj_close / _ffill(adj_close)[np.r_[0, :len(adj_close) - 1]] - 1)
    # no previous close on a listing day (for stocks listed before day 0 this row is
    # burn-in, never written)
    change[sim["first"], np.arange(p.n_stocks)] = np.nan
    all_rows = []
    for j, code in enumerate(codes):
        a, b = max(int(sim["first"][j]), B), int(sim["last"][j])  # simulated-day range
        # Qlib normalisation: adjusted close = 1.0 on the first stored day
        norm = 1.0 / (sim["close"][a, j] / 100 * sim["factor"][a, j])
        factor = sim["factor"][a:b + 1, j] * norm
        vals = {k: sim[k][a:b + 1, j] / 100 * factor for k in ("open", "high", "low", "close")}
        vals.update(volume=sim["volume"][a:b + 1, j] / factor, factor=factor,
                    change=change[a:b + 1, j])
        folder = root / "features" / code.lower()
        folder.mkdir(parents=True)
        for k, v in vals.items():
            _write_bin(folder / f"{k}.day.bin", a - B, v)
        all_rows.append(f"{code}\t{days[a - B]}\t{days[b - B]}")

    idx = _index(p, sim, member)
    folder = root / "features" / INDEX.lower()
    folder.mkdir(parents=True)
    for k, v in idx.items():
        _write_bin(folder / f"{k}.day.bin", 0, v)
    all_rows.append(f"{INDEX}\t{days[0]}\t{days[-1]}")
    (root / "instruments" / "all.txt").write_text("\n".join(sorted(all_rows)) + "\n")
    csi = [f"{code}\t{days[s]}\t{days[e]}" for j, code in enumerate(codes)
           for s, e in _spells(member[:, j])]
    (root / "instruments" / "csi300.txt").write_text("\n".join(csi) + "\n")

    truth = {
        "dates": days, "codes": np.array(codes), "factor_names": np.array(FACTORS),
        "mu": sim["mu"][B:], "alpha": sim["alpha"][B:],
        "beta": sim["beta"][B:].astype(np.float32),
        "factors": sim["z"][B:], "factor_mean": sim["zmean"][B:],
    }
    _write_npz(root / "truth.npz", truth)
    # written last: a directory with this file is complete
    (root / MARKER).write_text(json.dumps(_meta(p), indent=1, sort_keys=True) + "\n")


def _meta(p: Spec) -> dict:
    return {"generator": "replication.synthetic", "version": VERSION, "spec": asdict(p)}


def is_complete(out: Path, p: Spec) -> bool:
    """``out`` is a finished synthetic market built from exactly ``p``."""
    try:
        return json.loads((Path(out) / MARKER).read_text()) == json.loads(json.dumps(_meta(p)))
    except (OSError, ValueError):
        return False


def read_spec(out) -> Spec:
    """The :class:`Spec` a finished synthetic market at ``out`` was built from."""
    try:
        spec = json.loads((Path(out) / MARKER).read_text())["spec"]
    except (OSError, ValueError, KeyError):
        raise FileNotFoundError(f"{out} is not a finished synthetic market (no valid {MARKER}); "
                                f"write one with `python -m replication.synthetic --out {out}`")
    return Spec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def write_market(out, n_stocks: int = 200, n_days: int = 600, seed: int = 0,
                 start: str = "2016-01-04") -> Path:
    """Write (or reuse) a synthetic Qlib provider directory at ``out``.

    The market is built in a sibling ``out.tmp-XXXX`` and renamed into place, so a
    reader never sees a half-written ``out``. A complete ``out`` with the same
    parameters is reused as is; one built with other parameters is replaced. A
    non-empty ``out`` that is not a synthetic market is left alone (error), so a
    mistyped path cannot delete real data.

    Returns
    -------
    The absolute path of the directory.
    """
    p = Spec(n_stocks=n_stocks, n_days=n_days, seed=seed, start=start)
    if n_stocks < 10 or n_days < 20:
        raise ValueError(f"need at least 10 stocks and 20 days, got {n_stocks} x {n_days}")
    out = Path(out).expanduser().absolute()
    if is_complete(out, p):
        return out
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"{out} exists and is not a synthetic market (no {MARKER}); "
                              f"choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        _write(p, tmp / "m")
        if is_complete(out, p):  # another process finished the same market meanwhile
            return out
        if out.exists():
            shutil.rmtree(out)
        (tmp / "m").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m replication.synthetic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="provider directory to write")
    ap.add_argument("--stocks", type=int, default=200)
    ap.add_argument("--days", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default="2016-01-04", help="first day (rolled to a weekday)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    path = write_market(a.out, a.stocks, a.days, a.seed, a.start)
    print(f"synthetic market ({a.stocks} stocks x {a.days} days, seed {a.seed}) at {path} "
          f"[{time.perf_counter() - t0:.1f}s]; splits: {split(a.days, a.start)}")


if __name__ == "__main__":
    main()
