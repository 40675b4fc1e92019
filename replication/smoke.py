"""Smoke run on the synthetic market: ``python -m replication.smoke DIR``.

Builds the day cross-section datasets of both universes on the synthetic market in
DIR (written by ``python -m replication.synthetic``) with its own split, and prints
their shapes. Later stages (training, tables) extend this run.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from replication.data.dataset import SPLITS, DataConfig, dataset
from replication.synthetic import read_spec, split


def main(argv=None) -> int:
    folder = (argv or sys.argv[1:] or ["cache/synthetic"])[0]
    spec = read_spec(folder)
    for universe in ("csi300", "all"):
        t0 = time.time()
        ds = dataset(DataConfig.make(universe=universe, **split(spec.n_days, spec.start)),
                     provider=folder, progress=False)
        sizes = {sp: int(np.median(np.diff(ds.splits[sp].offsets))) for sp in SPLITS}
        print(f"{universe:6s} panel {ds.x.shape} days " +
              " ".join(f"{sp}={len(ds.splits[sp])}" for sp in SPLITS) +
              f" median stocks/day {sizes} ({time.time() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
