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
* **Removed entirely from training and validation**: their samples leave the train
  and valid splits, so no training batch, early-stopping score or cross-sectional
  model (FactorVAE's portfolios, GAT's attention, CA's managed portfolios) sees them
  before the test period. The training targets (CSRankNorm of the label per day) are
  ranked again over the day's remaining samples.
* **Kept**: the feature normalisation statistics (Qlib's RobustZScoreNorm: a median
  and a MAD per feature over all training stock-days of the universe). They are fitted
  once per dataset, as a Qlib handler does, and refitting them for every (m, seed)
  would rebuild the whole panel; m <= 200 of the universe's stocks barely move 20
  medians over hundreds of thousands of rows, and none of it is test-period data.
* **Test time**: the cross-section a model sees still holds every stock of the day
  (the paper predicts "on test dataset", then selects the m stocks); the daily Rank
  IC is computed over the held-out stocks present that day.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from replication.data.dataset import DayDataset, Split, cs_rank_norm
from replication.data.provider import DataError
from replication.metrics import daily_rank_ic

M_VALUES = (50, 100, 200)  # the paper's Table 2 columns


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


def _drop(sp: Split, cols: np.ndarray, rerank: bool) -> Split:
    keep = ~np.isin(sp.stock, cols)
    day_of = np.repeat(np.arange(len(sp.days)), np.diff(sp.offsets))[keep]
    counts = np.bincount(day_of, minlength=len(sp.days))
    present = counts > 0
    label, target = sp.label[keep], sp.target[keep]
    if rerank:  # CSRankNorm over the day's remaining samples (their labels are finite)
        target = cs_rank_norm(label, day_of)
    return Split(days=sp.days[present], offsets=np.r_[0, np.cumsum(counts[present])].astype(np.int64),
                 stock=sp.stock[keep], label=label, target=target)


def without(ds: DayDataset, cols: np.ndarray) -> DayDataset:
    """``ds`` with the stocks ``cols`` removed from the train and valid splits; the test
    split and the panel (shared, not copied) are unchanged."""
    splits = dict(ds.splits)
    for name in ("train", "valid"):
        splits[name] = _drop(ds.splits[name], cols, rerank=True)
        if not len(splits[name]):
            raise DataError(f"holding out {len(cols)} stocks leaves split {name} empty")
    return replace(ds, splits=splits)


def heldout_daily_rank_ic(mu: np.ndarray, ds: DayDataset, cols: np.ndarray) -> np.ndarray:
    """Eq. (20) per test day over the held-out stocks ``cols`` present that day, from the
    predictions ``mu`` of the whole test split (NaN on a day with fewer than 2)."""
    sp = ds.splits["test"]
    mine = np.isin(sp.stock, cols)
    day_of = np.repeat(np.arange(len(sp.days)), np.diff(sp.offsets))[mine]
    offsets = np.r_[0, np.cumsum(np.bincount(day_of, minlength=len(sp.days)))]
    return daily_rank_ic(mu[mine], sp.label[mine], offsets)
