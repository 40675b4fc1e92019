"""Experiment 2 (Table 2): robustness to stocks never seen in training.

The paper "randomly remove[s] m stocks S from the training dataset", trains on the
rest, predicts the test period and evaluates Rank IC and Rank ICIR "of stock set S on
test dataset". Our reading, where the paper is silent:

* **Who can be held out**: the stocks with at least one sample in the training split
  and one in the test split (removing a stock that never appears in training removes
  nothing; one absent from the test period cannot be evaluated).
* **The draw** for (m, seed): the first m of ``numpy.random.default_rng(seed)``'s
  permutation of those stocks (sorted by code), so it is reproducible, the same for
  every model, and nested: for one seed the 50 stocks are among the 100, which are
  among the 200. Table 2's seed s holds out the set of seed s and initialises the
  model with seed s.
* **Removed entirely from training and validation**: the run's dataset is built as if
  they were not in the universe for everything learned from those periods
  (``dataset(..., exclude=codes)``): no training batch, early-stopping score or
  cross-sectional layer (FactorVAE's portfolios, GAT's attention, CA's managed
  portfolios) sees them, the training targets' CSRankNorm ranks the day without them,
  and the feature normalisation statistics (RobustZScoreNorm's median and MAD per
  feature) are fitted without their training rows. The last matters on CSI300: the
  held-out stocks are long-standing members, and m = 200 removes about half of the
  training stock-days; keeping the universe's statistics would shift a feature's
  median by up to 0.10 of its scale (measured, seeds 0-4; 0.02 at m = 50). Each
  (m, seed) is therefore its own cached dataset (CSI300: ~7 s to build, ~140 MB).
* **Test time**: the cross-section a model sees still holds every stock of the day
  (the paper predicts "on test dataset", then selects the m stocks); the daily Rank
  IC is computed over the held-out stocks present that day.
"""
from __future__ import annotations

import hashlib

import numpy as np

from replication.data.dataset import DayDataset
from replication.data.provider import DataError
from replication.metrics import daily_rank_ic, summarize

TABLE2_M = (50, 100, 200)  # the paper's m: a Table 1 run keeps its score over each set of its seed


def candidates(ds: DayDataset) -> np.ndarray:
    """Panel columns of the stocks with samples in both the training and the test split."""
    return np.intersect1d(ds.splits["train"].stock, ds.splits["test"].stock)


def heldout(ds: DayDataset, m: int, seed: int) -> np.ndarray:
    """The panel columns of the m held-out stocks of ``seed`` (sorted)."""
    pool = candidates(ds)
    pool = pool[np.argsort(ds.codes[pool], kind="stable")]  # by code: independent of the panel order
    if not 0 < m <= len(pool):
        raise DataError(f"cannot hold out m={m} stocks: universe {ds.config.universe!r} has "
                        f"{len(pool)} stocks with data in both the training and the test period; "
                        f"choose 1 <= m <= {len(pool)}")
    return np.sort(pool[np.random.default_rng(seed).permutation(len(pool))[:m]])


def daily_rank_ic_over(pred: dict, codes) -> np.ndarray:
    """Eq. (20) for each day of flat predictions ``pred`` (date, instrument, mu, label in
    day-major order, as :func:`replication.run.split_predictions` makes them and
    :func:`replication.run.predictions` reads them back) over the stocks ``codes``
    present that day (NaN on a day with fewer than 2). Table 2's score: a run's test
    predictions and its held-out codes. The same codes on a Table 1 run's predictions (a
    model that trained on those stocks) give the reference the unseen score is read
    against, on the same cross-section (the paper compares with Table 1's score over
    all stocks)."""
    mine = np.isin(pred["instrument"], np.asarray(codes))
    days, day_of = np.unique(pred["date"], return_inverse=True)
    offsets = np.r_[0, np.cumsum(np.bincount(day_of[mine], minlength=len(days)))]
    return daily_rank_ic(pred["mu"][mine], pred["label"][mine], offsets)


def codes_digest(codes) -> str:
    """A short fingerprint of a held-out set (its codes, in order)."""
    return hashlib.sha1(",".join(map(str, codes)).encode()).hexdigest()[:12]


def seen_heldout(pred: dict, ds: DayDataset, seed: int) -> dict:
    """A Table 1 run's test Rank IC over the stocks each Table 2 cell of its seed holds
    out (every m of :data:`TABLE2_M` the universe allows): the "seen" reference of
    ``table2_seen``, kept in the run's result file because its predictions
    (``results/``) are not always kept (a lent GPU host, an ended session). ``ds`` is
    the run's dataset, from which :func:`heldout` draws the same sets as the Table 2
    runs do."""
    n, out = len(candidates(ds)), {}
    for m in (m for m in TABLE2_M if m <= n):
        codes = ds.codes[heldout(ds, m, seed)]
        out[str(m)] = {"codes": codes_digest(codes), "test": summarize(daily_rank_ic_over(pred, codes))}
    return out


def seen_score(table1_result: dict, codes) -> dict | None:
    """The stored :func:`seen_heldout` score of ``table1_result`` over exactly
    ``codes`` (a Table 2 run's held-out set); None when the run has none for that set
    (then score its saved predictions with :func:`daily_rank_ic_over`)."""
    stored = (table1_result.get("seen_heldout") or {}).get(str(len(codes)))
    return stored["test"] if stored and stored["codes"] == codes_digest(codes) else None
