"""The TopK-Drop backtest on small hand-built markets whose right answer is worked out
by hand in each test, the risk metrics against their formulas, and one real-data run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replication.backtest import (BacktestConfig, Quotes, analysis, quotes, risk_analysis, signal,
                                  topk_drop)

A, B, C, D = range(4)


def market(close, factor=1.0, change=None, traded=None, member=None, bench=None) -> Quotes:
    close = np.asarray(close, dtype=float)
    days, stocks = close.shape
    change = np.zeros_like(close) if change is None else np.asarray(change, dtype=float)
    traded = np.isfinite(close) if traded is None else np.asarray(traded)
    return Quotes(calendar=np.arange("2019-01-01", days, dtype="datetime64[D]"),
                  codes=np.array([f"SH60000{i}" for i in range(stocks)]),
                  close=close, factor=np.broadcast_to(np.asarray(factor, dtype=float), close.shape),
                  tradable=traded & (np.abs(change) < 9.5),
                  member=np.ones(close.shape, bool) if member is None else np.asarray(member),
                  bench=np.zeros(days) if bench is None else np.asarray(bench, dtype=float))


PRICES = [[10, 20, 40, 50], [10, 20, 40, 50], [11, 20, 40, 50]]
SCORES = np.array([[4, 3, 2, 1], [1, 2, 3, 4], [0, 0, 0, 0]], dtype=float)
K2 = BacktestConfig(topk=2, n_drop=1, account=1e6)


def test_two_days_by_hand():
    r = topk_drop(market(PRICES), SCORES, K2).report
    # day 0: no signal yet
    assert r["value"].iloc[0] == 1e6 and r["return"].iloc[0] == 0 and r["n_held"].iloc[0] == 0
    # day 1: today = [A, B, C], bottom of comb = C (not held), buy = [A, B] with 950,000 / 2 each
    # A: 47,500 shares = 475,000 + fee 237.5; B: 23,750 -> 23,700 shares = 474,000 + fee 237
    cash1 = 1e6 - 475_237.5 - 474_237
    assert r["cash"].iloc[1] == pytest.approx(cash1)
    assert r["cost"].iloc[1] == pytest.approx(474.5 / 1e6)
    assert r["turnover"].iloc[1] == pytest.approx(949_000 / 1e6)
    value1 = cash1 + 475_000 + 474_000
    assert r["return"].iloc[1] == pytest.approx((value1 - 1e6 + 474.5) / 1e6)  # 0: bought at the close
    # day 2 (scores of day 1 reversed): last = [B, A], today = [D], comb = [D, B, A]: sell A
    # (bought yesterday: sellable today) at 11, buy D with 95% of the cash
    cash2 = cash1 + 47_500 * 11 - 47_500 * 11 * 0.0015
    shares_d = (cash2 * 0.95 / 50 + 0.1) // 100 * 100
    cash2 -= shares_d * 50 * 1.0005
    value2 = cash2 + 23_700 * 20 + shares_d * 50
    cost2 = 47_500 * 11 * 0.0015 + shares_d * 50 * 0.0005
    assert r["cash"].iloc[2] == pytest.approx(cash2)
    assert r["return"].iloc[2] == pytest.approx((value2 - value1 + cost2) / value1)
    assert r["n_held"].tolist() == [0, 2, 2]
    bt = topk_drop(market(PRICES), SCORES, K2)
    assert bt.holdings[2] == ("SH600001", "SH600003")


def test_limit_up_blocks_a_buy_but_keeps_its_share_of_the_cash():
    change = np.zeros((3, 4))
    change[1, A] = 10.0
    bt = topk_drop(market(PRICES, change=change), SCORES, K2)
    assert bt.holdings[1] == ("SH600001",)  # only B; A was planned, so B still gets 950,000 / 2
    assert bt.report["cash"].iloc[1] == pytest.approx(1e6 - 474_237)


def test_limit_down_blocks_a_sell():
    change = np.zeros((3, 4))
    change[2, A] = -9.6
    bt = topk_drop(market(PRICES, change=change), SCORES, K2)
    # A stays; the buy of D was planned with A's sale and still happens: three names
    assert bt.holdings[2] == ("SH600000", "SH600001", "SH600003")
    assert bt.report["cost"].iloc[2] * bt.report["value"].iloc[1] == pytest.approx(
        (bt.report["cash"].iloc[1] * 0.95 + 0.1 * 50) // 5000 * 5000 * 0.0005, rel=1e-9)


def test_suspension_blocks_trading_and_freezes_the_price():
    close = np.array(PRICES, dtype=float)
    close[2, A] = np.nan  # Qlib's suspended day: no close
    bt = topk_drop(market(close), SCORES, K2)
    assert "SH600000" in bt.holdings[2]
    r = bt.report
    # A is valued at its last close (10): the day's P&L comes only from the trade of D
    day2_trade_cost = r["cost"].iloc[2] * r["value"].iloc[1]
    assert r["value"].iloc[2] == pytest.approx(r["value"].iloc[1] - day2_trade_cost)
    # the snapshot's form of a suspension: previous close kept, not traded
    close[2, A] = 10.0
    traded = np.ones((3, 4), bool)
    traded[2, A] = False
    assert topk_drop(market(close, traded=traded), SCORES, K2).holdings[2] == bt.holdings[2]


def test_lots_are_whole_hundreds_of_raw_shares():
    # factor 2.5: raw shares = adjusted * 2.5; 475,000 / 10 = 47,500 adjusted = 118,750 raw -> 118,700
    bt = topk_drop(market(PRICES, factor=2.5), SCORES, K2)
    assert bt.report["cash"].iloc[1] == pytest.approx(
        1e6 - 47_480 * 10 * 1.0005 - (23_750 * 2.5 // 100 * 100 / 2.5) * 20 * 1.0005)


def test_minimum_cost_of_five():
    cfg = BacktestConfig(topk=1, n_drop=1, account=10_000)
    r = topk_drop(market(PRICES), SCORES, cfg).report
    # 9,500 / 10 = 950 shares -> 900: 9,000 CNY, fee max(4.5, 5) = 5
    assert r["cost"].iloc[1] * 10_000 == pytest.approx(5.0)
    assert r["cash"].iloc[1] == pytest.approx(10_000 - 9_005)


def test_an_order_the_cash_cannot_cover_is_clipped_to_nothing():
    cfg = BacktestConfig(topk=1, n_drop=1, account=1_000, risk_degree=1.0)
    r = topk_drop(market(PRICES), SCORES, cfg).report
    # 100 shares = 1,000 + fee 5 > cash; clipped to (1,000 - 5) / 10 = 99.5 -> 0 lots: no trade, no fee
    assert r["n_held"].iloc[1] == 0 and r["cost"].iloc[1] == 0 and r["cash"].iloc[1] == 1_000


def test_turnover_constraint_replaces_at_most_n_names_a_day():
    rng = np.random.default_rng(0)
    days, stocks = 30, 40
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, (days, stocks)), axis=0))
    scores = rng.normal(size=(days, stocks))
    cfg = BacktestConfig(topk=10, n_drop=3, account=1e7)
    bt = topk_drop(market(close), scores, cfg)
    held = [set(h) for h in bt.holdings]
    assert len(held[1]) == 10
    for before, after in zip(held[1:-1], held[2:]):
        assert len(before - after) <= 3 and len(after) == 10
    assert any(len(before - after) == 3 for before, after in zip(held[1:-1], held[2:]))


def test_first_day_has_no_signal_and_the_excess_is_minus_the_benchmark():
    bench = [0.01, -0.02, 0.005]
    bt = topk_drop(market(PRICES, bench=bench), SCORES, K2)
    excess = bt.report["return"] - bt.report["bench"] - bt.report["cost"]
    assert excess.iloc[0] == pytest.approx(-0.01)


def test_a_held_stock_without_a_score_is_sold_first():
    scores = SCORES.copy()
    scores[1] = [9, np.nan, 1, 0]  # B (held) has no score; A, the best, stays
    bt = topk_drop(market(PRICES), scores, K2)
    assert bt.holdings[2] == ("SH600000", "SH600002")  # B sold, C (best unheld) bought


def test_only_members_of_the_prediction_day_are_chosen():
    member = np.ones((3, 4), bool)
    member[0, A] = False  # A leaves the index on day 0: its score is ignored
    bt = topk_drop(market(PRICES, member=member), SCORES, K2)
    assert bt.holdings[1] == ("SH600001", "SH600002")


def test_deterministic():
    a = topk_drop(market(PRICES), SCORES, K2)
    b = topk_drop(market(PRICES), SCORES, K2)
    pd.testing.assert_frame_equal(a.report, b.report)


def test_risk_metrics_against_their_formulas():
    r = np.array([0.01, -0.02, 0.03, -0.01])
    m = risk_analysis(r)
    assert m["annualized_return"] == pytest.approx(0.0025 * 238)
    std = np.sqrt(((r - 0.0025) ** 2).sum() / 3)
    assert m["information_ratio"] == pytest.approx(0.0025 / std * np.sqrt(238))
    # cumsum 0.01, -0.01, 0.02, 0.01; running max 0.01, 0.01, 0.02, 0.02
    assert m["max_drawdown"] == pytest.approx(-0.02)
    report = pd.DataFrame({"return": r, "bench": r / 2, "cost": np.full(4, 0.001)})
    a = analysis(report)
    assert a["excess_with_cost"]["mean"] == pytest.approx(0.0025 / 2 - 0.001)
    assert a["excess_without_cost"]["mean"] == pytest.approx(0.0025 / 2)
    assert a["absolute"]["mean"] == pytest.approx(0.0025 - 0.001)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="n_drop"):
        BacktestConfig(n_drop=0)
    with pytest.raises(ValueError, match="unknown BacktestConfig keys"):
        BacktestConfig.make(top_k=50)
    with pytest.raises(ValueError, match="do not match"):
        topk_drop(market(PRICES), SCORES[:, :2], K2)


def test_real_data_backtest(real_market):
    """The committed FactorVAE seed-0 predictions through the real CSI300 exchange:
    the rules hold on every day of the test period."""
    from replication.files import ROOT

    z = np.load(next((ROOT / "paper_tables" / "predictions").glob("factorvae-csi300-seed0-*.npz")))
    cfg = BacktestConfig()
    q = quotes(real_market, "2019-01-01", "2020-12-31", cfg)
    assert q.member.sum(1).min() > 250 and np.isfinite(q.bench).all()
    index = real_market.fields["close"][:, real_market.column("SH000300")]
    i = real_market.day_index("2019-01-02")
    assert q.bench[0] == pytest.approx(index[i] / index[i - 1] - 1, rel=1e-6)
    bt = topk_drop(q, signal(q, z["date"], z["instrument"], z["mu"]), cfg)
    r = bt.report
    assert (r["cash"] > 0).all() and r["n_held"].iloc[0] == 0
    assert 48 <= r["n_held"].iloc[5:].median() <= 52
    held = [set(h) for h in bt.holdings]
    assert max(len(a - b) for a, b in zip(held[1:-1], held[2:])) <= cfg.n_drop
    assert r["cost"].iloc[1:].mean() > 0 and (r["turnover"].iloc[2:].median() < 0.3)
