"""Day cross-section datasets: processors, the paper's inclusion rule, splits, cache.

One sample is one trading day ``s``: ``x_s`` (N_s, T, C) — the normalised Alpha158-20
features of the stocks of the day over the ``T`` days ending at ``s`` — and ``y_s``
(N_s,) their labels. Processors are those of Qlib's benchmark configs:

* ``RobustZScoreNorm`` on features, fitted on the **training period only**, on every
  row a Qlib handler of the universe would hold there (stock-days inside the stock's
  stored range and its membership; rows with a NaN label included): median and
  ``(MAD + 1e-12) * 1.4826`` per feature; ``x' = clip((x - median) / scale, -3, 3)``,
  so ``±inf`` becomes ``±3``.
* ``Fillna``: remaining NaN features become 0.
* Train/valid only: ``DropnaLabel``, then ``CSRankNorm`` of the label per day over the
  universe's rows with a label: ``(rank_pct - 0.5) * 3.46``, average ranks.
  The raw label is kept for evaluation.

Inclusion of stock i on day s (paper: "we only consider the stocks that exist in
cross-section at all T time steps"): i is in the universe on day s (``all``: every
A-share stock, indices excluded; ``csi300``: a member on day s) and traded on each of
the T days ``s-T+1..s``. This snapshot stores suspended days with the previous close
and volume 0, so "traded" means a valid close **and** volume > 0 (see data/README.md).
Train and valid days also require a finite label (DropnaLabel). Test days do not: who
is in a test cross-section is decided without future information (FactorVAE's
predictor attends over the whole cross-section), and metrics skip NaN labels.
The window of a sample holds the stock's real features on all T days, whether or not
it was a member of the universe on the earlier days; membership decides only who is
in day s's cross-section.

The whole normalised panel is one dense float32 array ``(days, stocks, C)``; a day's
sample is an index gather ``x[s-T+1:s+1, stocks]``. A built dataset is cached under
``$REPLICATION_CACHE`` (default ``./cache``) keyed by the data fingerprint and config.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from replication.config import Overridable
from replication.data.features import FEATURES, HORIZON, LABEL, feature_panel
from replication.data.provider import DataError, Market, load_market

DATASET_VERSION = 1  # bump when the construction changes, to invalidate caches
SPLITS = ("train", "valid", "test")
RANK_SCALE = 3.46  # Qlib CSRankNorm: 1 / std of a uniform(0, 1) rank


@dataclass(frozen=True)
class DataConfig(Overridable):
    """What defines a dataset. Defaults are the paper's."""

    universe: str = "all"  # paper: all A-share stocks; or "csi300" (members on day s)
    train: tuple[str, str] = ("2010-01-01", "2017-12-31")  # paper
    valid: tuple[str, str] = ("2018-01-01", "2018-12-31")  # paper
    test: tuple[str, str] = ("2019-01-01", "2020-12-31")  # paper
    T: int = 20  # paper: days per sample, including day s

    def __post_init__(self) -> None:
        if self.universe not in ("all", "csi300"):
            raise DataError(f"unknown universe {self.universe!r}: use 'all' or 'csi300'")
        bounds = [np.datetime64(d, "D") for split in SPLITS for d in getattr(self, split)]
        if any(b <= a for a, b in zip(bounds[::2], bounds[1::2])) or \
                any(b <= a for a, b in zip(bounds[1:-1:2], bounds[2::2])):
            raise DataError(f"splits must be ordered, non-empty and disjoint: {self}")
        if self.T < 1:
            raise DataError(f"T must be >= 1, got {self.T}")


def is_stock(code: str) -> bool:
    """A-share stock codes (SH6xxxxx, SZ0xxxxx, SZ30xxxx); indices (SH000xxx, SZ399xxx) are not."""
    return code.upper().startswith(("SH6", "SZ0", "SZ30"))


@dataclass
class Split:
    """The samples of one split in compressed-row form.

    ``days`` (n_days,) panel day index s of each sample; sample k holds stocks
    ``stock[offsets[k]:offsets[k+1]]`` (panel column indices), with raw labels
    ``label`` and normalised training targets ``target`` (NaN on test days).
    """

    days: np.ndarray
    offsets: np.ndarray
    stock: np.ndarray
    label: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.days)


@dataclass
class DayDataset:
    """A built dataset: the normalised panel and the day samples of each split."""

    config: DataConfig
    x: np.ndarray  # (D, S, C) float32 normalised features, panel day 0 = calendar[0]
    calendar: np.ndarray  # (D,) datetime64[D]
    codes: np.ndarray  # (S,) str
    splits: dict[str, Split]
    fingerprint: str
    norm: dict[str, np.ndarray]  # RobustZScoreNorm statistics: "median", "scale" (C,)
    excluded: tuple[str, ...] = ()  # stocks left out of training (Table 2's held-out stocks)

    def day(self, split: str, k: int):
        """Sample k of ``split``: x (N, T, C), raw label (N,), target (N,), codes (N,)."""
        sp = self.splits[split]
        s, a, b = int(sp.days[k]), sp.offsets[k], sp.offsets[k + 1]
        cols = sp.stock[a:b]
        x = self.x[s - self.config.T + 1:s + 1, cols].transpose(1, 0, 2)  # (T, N, C) -> (N, T, C)
        return x, sp.label[a:b], sp.target[a:b], self.codes[cols]

    def dates(self, split: str) -> np.ndarray:
        return self.calendar[self.splits[split].days]


def robust_zscore_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qlib RobustZScoreNorm.fit on rows (R, C): median and (MAD + 1e-12) * 1.4826."""
    med = np.nanmedian(x, axis=0)
    mad = np.nanmedian(np.abs(x - med), axis=0)
    return med, (mad + 1e-12) * 1.4826


def robust_zscore_apply(x: np.ndarray, med: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Normalise, clip to [-3, 3] (±inf -> ±3), then Fillna(0); in place, float32."""
    x -= med.astype(np.float32)
    x /= scale.astype(np.float32)
    np.clip(x, -3, 3, out=x)
    np.nan_to_num(x, copy=False, nan=0.0)
    return x


def cs_rank_norm(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Qlib CSRankNorm: per group (day), (average-rank percentile - 0.5) * 3.46."""
    from scipy.stats import rankdata

    out = np.empty(len(values), dtype=np.float64)
    bounds = np.flatnonzero(np.diff(groups)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(values)]):
        out[a:b] = rankdata(values[a:b]) / (b - a)
    return ((out - 0.5) * RANK_SCALE).astype(np.float32)


def window_traded(market: Market, T: int) -> np.ndarray:
    """(D, S) bool: the stock traded on each of the T days ending at day s."""
    traded = market.trading().astype(np.int32)
    c = np.cumsum(traded, axis=0)
    c[T:] -= c[:-T].copy()
    out = c == T
    out[:T - 1] = False
    return out


def prepare(market: Market, config: DataConfig) -> Market:
    """The part of ``market`` a dataset reads: the universe's stocks, calendar days up to
    the last test label. Its fingerprint identifies the dataset's input (a provider
    directory and a pack made from it give the same one)."""
    cal = market.calendar
    i_end = market.date_range(None, config.test[1])[1]
    if i_end + HORIZON > len(cal):
        raise DataError(f"{market.source} ends {cal[-1]}: the labels of the last test days "
                        f"need {HORIZON} trading days after {config.test[1]}")
    market = market.between(None, cal[i_end + HORIZON - 1])
    if config.universe == "all":
        codes = [c for c in market.codes if is_stock(c) and c in market.markets.get("all", {})]
    else:
        market.membership(config.universe, 0, 1)  # raises the unknown-market error
        codes = sorted(c for c in market.markets[config.universe] if c in market._col)
    if not codes:
        raise DataError(f"universe {config.universe!r} has no stocks with data in {market.source}")
    return market.select(codes)


def build(market: Market, config: DataConfig, progress: bool = False,
          exclude: tuple[str, ...] = ()) -> DayDataset:
    """Build the dataset of ``config`` from a market returned by :func:`prepare`.

    ``exclude``: stock codes treated as if they were not in the universe for everything
    learned from the training period (Table 2's held-out stocks): the normalisation
    statistics, the train and valid samples and their CSRankNorm. The test split still
    holds them.
    """
    fp = market.fingerprint()
    unknown = sorted(set(exclude) - set(market.codes))
    if unknown:
        raise DataError(f"cannot exclude {unknown[:5]}{' ...' if len(unknown) > 5 else ''}: "
                        f"not stocks of universe {config.universe!r} in {market.source}")
    kept = ~np.isin(market.codes, list(exclude))  # (S,)
    D = len(market.calendar) - HORIZON
    t0 = time.time()
    x, label = feature_panel(market, 0, D)  # (D, S, C), (D, S)
    if progress:
        print(f"features {x.shape} in {time.time() - t0:.1f}s", flush=True)
    rows = market.stored(0, D) & market.membership(config.universe, 0, D)
    bounds = {sp: market.date_range(*getattr(config, sp)) for sp in SPLITS}
    tr = np.zeros(D, dtype=bool)
    tr[slice(*bounds["train"])] = True
    med, scale = robust_zscore_fit(x[rows & tr[:, None] & kept])
    robust_zscore_apply(x, med, scale)
    eligible = rows & window_traded(market, config.T)[:D]
    splits = {}
    for sp in SPLITS:
        a, b = bounds[sp]
        a = max(a, config.T - 1)
        learn = sp != "test"  # the excluded stocks leave train and valid, not test
        labelled = rows & np.isfinite(label) & (kept if learn else True)
        keep = eligible[a:b] & labelled[a:b] if learn else eligible[a:b]
        d, s = np.nonzero(keep)
        target = np.full(len(d), np.nan, dtype=np.float32)
        if learn:  # CSRankNorm over all the universe's labelled rows of the day
            ld, ls = np.nonzero(labelled[a:b])
            ranked = np.full((b - a, len(market.codes)), np.nan, dtype=np.float32)
            ranked[ld, ls] = cs_rank_norm(label[a:b][ld, ls], ld)
            target = ranked[d, s]
        days, counts = np.unique(d, return_counts=True)
        splits[sp] = Split(days=(days + a).astype(np.int64),
                           offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
                           stock=s.astype(np.int64), label=label[a:b][d, s], target=target)
        if len(days) == 0:
            raise DataError(f"split {sp} {getattr(config, sp)} has no samples in {market.source}")
    return DayDataset(config=config, x=x, calendar=market.calendar[:D], codes=market.codes,
                      splits=splits, fingerprint=fp, norm={"median": med, "scale": scale},
                      excluded=tuple(sorted(exclude)))


# ----------------------------------------------------------------------------- cache

def cache_root() -> Path:
    return Path(os.environ.get("REPLICATION_CACHE", "cache")).expanduser()


def _key(fingerprint: str, config: DataConfig, exclude: tuple[str, ...] = ()) -> str:
    key = {"fp": fingerprint, "config": asdict(config), "v": DATASET_VERSION}
    if exclude:  # absent otherwise: the caches of datasets without exclusions stay valid
        key["exclude"] = sorted(exclude)
    blob = json.dumps(key, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def save(ds: DayDataset, folder: Path) -> None:
    """Write atomically: a temporary folder renamed into place when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    np.save(tmp / "x.npy", ds.x)
    arrays = {"calendar": ds.calendar.astype("datetime64[D]").astype(np.int64),
              "codes": ds.codes.astype(str), **{f"norm_{k}": v for k, v in ds.norm.items()}}
    for sp, s in ds.splits.items():
        arrays.update({f"{sp}_{f.name}": getattr(s, f.name) for f in fields(Split)})
    np.savez(tmp / "index.npz", **arrays)
    meta = {"config": asdict(ds.config), "fingerprint": ds.fingerprint, "excluded": list(ds.excluded),
            "version": DATASET_VERSION, "features": list(FEATURES), "label": LABEL}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def load(folder: Path, mmap: bool = False) -> DayDataset:
    meta = json.loads((folder / "meta.json").read_text())
    z = np.load(folder / "index.npz")
    splits = {sp: Split(**{f.name: z[f"{sp}_{f.name}"] for f in fields(Split)}) for sp in SPLITS}
    return DayDataset(
        config=DataConfig.make(**meta["config"]),
        x=np.load(folder / "x.npy", mmap_mode="r" if mmap else None),
        calendar=z["calendar"].astype("datetime64[D]"), codes=z["codes"], splits=splits,
        fingerprint=meta["fingerprint"],
        norm={"median": z["norm_median"], "scale": z["norm_scale"]},
        excluded=tuple(meta.get("excluded", ())))


def dataset(config: DataConfig | None = None, provider=None, progress: bool = True,
            market: Market | None = None, exclude=()) -> DayDataset:
    """The dataset of ``config`` (default: the paper's), from the cache when built before.

    ``provider`` is a Qlib provider directory or a pack file (default ``$QLIB_DATA`` or
    ``~/.qlib/qlib_data/cn_data``). ``exclude``: stock codes left out of training
    (see :func:`build`); each exclusion list is its own cached dataset.
    """
    config, exclude = config or DataConfig(), tuple(sorted(exclude))
    market = prepare(market or load_market(provider), config)
    folder = cache_root() / "datasets" / _key(market.fingerprint(), config, exclude)
    if (folder / "meta.json").is_file():
        return load(folder)
    ds = build(market, config, progress=progress, exclude=exclude)
    save(ds, folder)
    return ds
