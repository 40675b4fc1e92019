"""Table 3's portfolio backtest: TopK-Drop on CSI300 members with A-share trading rules.

Reproduces Qlib's ``TopkDropoutStrategy`` (``method_sell="bottom"``, ``method_buy="top"``,
``hold_thresh=1``, ``only_tradable=False``, ``risk_degree=0.95``) traded through Qlib's
``Exchange`` (deal price ``$close``, ``limit_threshold=0.095``, ``trade_unit=100``,
``open_cost=0.0005``, ``close_cost=0.0015``, ``min_cost=5``, no impact cost, no
volume limit) and its account bookkeeping, which the paper used (its footnote 2).
The rules, day by day (trading day t, all trades at t's close):

- **Signal**: the scores predicted on day t-1 (the previous trading day of the
  calendar) for the stocks that were CSI300 members on t-1. No scores for t-1 (the
  first day of the window): no trade.
- **Which to sell, which to buy** (Qlib's list arithmetic, Python slicing included):
  ``last`` = held stocks by score (held stocks without a score last);
  ``today`` = the best ``n + k - |last|`` unheld scored stocks; ``comb`` = last and
  today by score; sell = held stocks among the bottom ``n`` of comb; buy = the first
  ``|sell| + k - |last|`` of today. Planned sells that fail still count, so the
  portfolio can exceed k names for a while, as in Qlib.
- **Tradable**: the stock traded on day t (valid close and volume > 0; this data
  snapshot keeps suspended days as the previous close with volume 0, where Qlib's
  Yahoo data has NaN) and ``|change| < 9.5%``. A stock at either price limit can be
  neither bought nor sold (Qlib's ``forbid_all_trade_at_limit=True``), also under
  ChiNext's wider limits since August 2020: the threshold is Qlib's flat 9.5%.
- **Sells** first, each of a whole holding, for ``value - max(value * 0.0015, 5)``.
  A holding is sellable from the day after its purchase (``hold_thresh=1``; with one
  decision a day this never binds, as in Qlib).
- **Buys**: ``cash * 0.95 / |buy|`` per planned buy (untradable ones keep their share
  of the split and are skipped), shares rounded down to lots of 100 **raw** shares
  (raw shares = adjusted shares * factor), cost ``max(value * 0.0005, 5)``; an order
  the cash cannot cover is clipped as Qlib's exchange does; orders of zero value cost
  nothing.
- **Valuation**: each holding at its last traded close (a suspended stock keeps its
  price: zero P&L while suspended); value = cash + holdings.
- **Report** (Qlib's ``PortfolioMetrics``): return_t = (value_t - value_{t-1} +
  cost_t) / value_{t-1} (gross of cost), cost_t and turnover_t as fractions of
  value_{t-1}, bench_t = the CSI300 index's close-to-close return.

The loop over days is plain Python (the rules are sequential); per day it touches
only the scored and held stocks, so a two-year backtest takes about a second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from replication.config import Overridable
from replication.data.dataset import is_stock
from replication.data.provider import DataError, Market

ANNUAL_DAYS = 238  # Qlib's risk_analysis for daily data


@dataclass(frozen=True)
class BacktestConfig(Overridable):
    """TopK-Drop and exchange settings: the paper's k and n, the rest Qlib's benchmark."""

    topk: int = 50  # paper: k
    n_drop: int = 5  # paper: n
    account: float = 1e8  # Qlib's benchmark configs (CNY); the paper does not say
    risk_degree: float = 0.95  # Qlib's TopkDropoutStrategy default: share of cash spent on buys
    open_cost: float = 0.0005  # Qlib benchmark: buy cost rate
    close_cost: float = 0.0015  # Qlib benchmark: sell cost rate
    min_cost: float = 5.0  # Qlib: CNY per order
    trade_unit: int = 100  # China A-shares: raw shares per lot
    limit_threshold: float = 0.095  # Qlib benchmark: |change| >= this blocks trading
    market: str = "csi300"  # paper: choose among CSI300 members
    benchmark: str = "SH000300"  # paper: the CSI300 index

    def __post_init__(self) -> None:
        if self.topk < 1 or self.n_drop < 1:
            # Qlib's bottom-n slice list[-0:] would sell every holding with n = 0
            raise ValueError(f"topk and n_drop must be >= 1, got {self.topk}, {self.n_drop}")


@dataclass(frozen=True)
class Quotes:
    """What the exchange knows, on the window's trading days x stocks.

    close : (D, S) float64 adjusted close, the deal and valuation price (NaN: no price).
    factor : (D, S) float64 adjustment factor: raw shares = adjusted shares * factor.
    tradable : (D, S) bool traded that day and |change| below the limit threshold.
    member : (D, S) bool member of the strategy's market that day.
    bench : (D,) float64 the benchmark's close-to-close return (day 0: vs the day before).
    """

    calendar: np.ndarray
    codes: np.ndarray
    close: np.ndarray
    factor: np.ndarray
    tradable: np.ndarray
    member: np.ndarray
    bench: np.ndarray

    def column(self, code: str) -> int:
        j = np.searchsorted(self.codes, code)
        if j == len(self.codes) or self.codes[j] != code:
            raise DataError(f"stock {code!r} of the predictions has no quotes in the market data")
        return int(j)


def quotes(market: Market, start, end, config: BacktestConfig = BacktestConfig()) -> Quotes:
    """The exchange's view of ``market`` on the trading days in ``[start, end]``."""
    i0, i1 = market.date_range(start, end)
    if i0 == 0:
        raise DataError(f"the backtest window starts on the first day of {market.source}; "
                        f"the benchmark's first return needs the day before")
    try:
        b = market.column(config.benchmark)
    except DataError:
        raise DataError(f"benchmark {config.benchmark!r} has no data in {market.source}; "
                        f"set BacktestConfig.benchmark to an index the data holds") from None
    stocks = np.array([c for c in market.codes if is_stock(c)])  # the indices are not for sale
    cols = np.array([market.column(c) for c in stocks])
    f = {k: market.fields[k][i0:i1, cols].astype(np.float64) for k in ("close", "factor", "change")}
    traded = market.trading()[i0:i1, cols]
    with np.errstate(invalid="ignore"):
        tradable = traded & (np.abs(f["change"]) / 100 < config.limit_threshold)  # change is in %
    index = market.fields["close"][i0 - 1:i1, b]
    # Qlib: $close/Ref($close,1)-1 in its float32 expression engine, fillna(0)
    bench = np.nan_to_num(index[1:] / index[:-1] - np.float32(1)).astype(np.float64)
    return Quotes(calendar=market.calendar[i0:i1], codes=stocks, close=f["close"],
                  factor=f["factor"], tradable=tradable,
                  member=market.membership(config.market, i0, i1)[:, cols], bench=bench)


def signal(q: Quotes, dates, codes, scores) -> np.ndarray:
    """(D, S) scores on the quotes' grid (NaN: no score) from flat prediction rows."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    days = np.searchsorted(q.calendar, dates)
    inside = days < len(q.calendar)
    inside[inside] = q.calendar[days[inside]] == dates[inside]
    if not inside.any():
        raise DataError(f"no prediction date lies in the backtest window "
                        f"{q.calendar[0]} .. {q.calendar[-1]}")
    cols = np.array([q.column(c) for c in np.asarray(codes)[inside]])
    out = np.full(q.close.shape, np.nan)
    out[days[inside], cols] = np.asarray(scores, dtype=np.float64)[inside]
    return out


def _by_score(stocks, score: np.ndarray) -> list[int]:
    """Stocks by descending score, those without a score last (pandas' sort_values)."""
    return sorted(stocks, key=lambda j: (math.isnan(score[j]), -score[j] if score[j] == score[j] else 0))


@dataclass
class Backtest:
    """A backtest's daily report (index: dates) and its holdings after each day."""

    report: pd.DataFrame  # value, cash, return, cost, turnover, bench, n_held
    holdings: list[tuple[str, ...]]


def topk_drop(q: Quotes, scores: np.ndarray, config: BacktestConfig = BacktestConfig()) -> Backtest:
    """Run TopK-Drop over the window of ``q`` with ``scores`` (D, S) predicted on each day."""
    if scores.shape != q.close.shape:
        raise ValueError(f"scores {scores.shape} do not match the quotes {q.close.shape}")
    k, n, cfg = config.topk, config.n_drop, config
    amount: dict[int, float] = {}  # stock -> adjusted shares, in order of purchase (Qlib's dict)
    price: dict[int, float] = {}  # stock -> last traded close
    bought: dict[int, int] = {}  # stock -> day of purchase
    cash = value_prev = float(cfg.account)
    rows, holdings = [], []

    def lots(shares: float, j: int, t: int) -> float:
        """Round adjusted shares down to whole lots of raw shares (Qlib adds 0.1 for precision)."""
        f = q.factor[t, j]
        return (shares * f + 0.1) // cfg.trade_unit * cfg.trade_unit / f

    for t in range(len(q.calendar)):
        cost = turnover = 0.0
        score = np.where(q.member[t - 1], scores[t - 1], np.nan) if t > 0 else None
        if score is not None and np.isfinite(score).any():
            last = _by_score(list(amount), score)
            held = set(amount)
            unheld = [j for j in _by_score(np.flatnonzero(np.isfinite(score)), score) if j not in held]
            today = unheld[:n + k - len(last)]
            comb = _by_score(sorted(held | set(today), key=lambda j: q.codes[j]), score)
            bottom = set(comb[len(comb) - n:])
            sell = [j for j in last if j in bottom]
            buy = today[:len(sell) + k - len(last)]
            for j in list(amount):  # sells, in order of purchase
                if not q.tradable[t, j] or j not in sell or bought[j] >= t:
                    continue
                val = amount[j] * q.close[t, j]
                fee = max(val * cfg.close_cost, cfg.min_cost)
                if cash + val < fee:  # Qlib: never let the cash go negative
                    continue
                if val > 1e-5:
                    cash += val - fee
                    cost, turnover = cost + fee, turnover + val
                    del amount[j], price[j], bought[j]
            per_buy = cash * cfg.risk_degree / len(buy) if buy else 0.0
            for j in buy:
                if not q.tradable[t, j]:
                    continue
                p = q.close[t, j]
                shares = lots(per_buy / p, j, t)
                val = shares * p
                if cash < max(val * cfg.open_cost, cfg.min_cost):  # cash cannot cover the fee
                    continue
                if cash < val + max(val * cfg.open_cost, cfg.min_cost):  # clip to the cash
                    rate = cfg.open_cost
                    most = (cash / (1 + rate) if cash >= cfg.min_cost / rate + cfg.min_cost
                            else cash - cfg.min_cost) / p
                    shares = lots(min(most, shares), j, t)
                    val = shares * p
                if val <= 1e-5:  # nothing dealt, nothing paid
                    continue
                fee = max(val * cfg.open_cost, cfg.min_cost)
                cash -= val + fee
                cost, turnover = cost + fee, turnover + val
                amount[j], price[j], bought[j] = shares, p, t
        for j in amount:  # end of day: mark to the day's close where there is one
            if np.isfinite(q.close[t, j]):
                price[j] = q.close[t, j]
        value = cash + sum(amount[j] * price[j] for j in amount)
        rows.append((value, cash, (value - value_prev + cost) / value_prev, cost / value_prev,
                     turnover / value_prev, q.bench[t], len(amount)))
        holdings.append(tuple(sorted(q.codes[j] for j in amount)))
        value_prev = value
    report = pd.DataFrame(rows, columns=["value", "cash", "return", "cost", "turnover", "bench", "n_held"],
                          index=pd.DatetimeIndex(q.calendar, name="date"))
    return Backtest(report, holdings)


def risk_analysis(r) -> dict:
    """Qlib's ``risk_analysis`` of daily returns (its default "sum" mode): mean, std
    (ddof 1), annualized_return = mean * 238, information_ratio (the paper's SR) =
    mean / std * sqrt(238), max_drawdown = min of (cumsum - running max of cumsum)."""
    r = np.asarray(r, dtype=np.float64)
    mean, std = r.mean(), r.std(ddof=1)
    cum = np.cumsum(r)
    return {"mean": float(mean), "std": float(std), "annualized_return": float(mean * ANNUAL_DAYS),
            "information_ratio": float(mean / std * np.sqrt(ANNUAL_DAYS)),
            "max_drawdown": float((cum - np.maximum.accumulate(cum)).min())}


def analysis(report: pd.DataFrame) -> dict:
    """The three series Table 3 and Figure 6 use, each through :func:`risk_analysis`:
    excess return with cost (the paper's Table 3), without cost, and absolute (net of cost)."""
    return {"excess_with_cost": risk_analysis(report["return"] - report["bench"] - report["cost"]),
            "excess_without_cost": risk_analysis(report["return"] - report["bench"]),
            "absolute": risk_analysis(report["return"] - report["cost"])}
