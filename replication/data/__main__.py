"""Command line for the data layer.

    python -m replication.data info  [--provider DIR|PACK]
    python -m replication.data build [--provider DIR|PACK] [--universe all|csi300]
    python -m replication.data pack  --out FILE [--provider DIR] [--start D] [--end D]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from replication.data.dataset import SPLITS, DataConfig, dataset, is_stock
from replication.data.provider import DataError, load_market


def info(args) -> dict:
    """Date range, stock counts and fingerprint of a provider (data/README.md quotes it)."""
    m = load_market(args.provider)
    stocks = np.array([is_stock(c) for c in m.codes])
    traded = m.trading()[:, stocks].sum(axis=1)
    out = {"source": m.source, "calendar": [str(m.calendar[0]), str(m.calendar[-1])],
           "days": len(m.calendar), "instruments": len(m.codes), "stocks": int(stocks.sum()),
           "markets": {k: len(v) for k, v in m.markets.items()},
           "traded_stocks_per_day": {str(m.calendar[i]): int(traded[i])
                                     for i in np.linspace(0, len(traded) - 1, 6).astype(int)},
           "fingerprint": m.fingerprint()}
    print(json.dumps(out, indent=1))
    return out


def build(args) -> None:
    t0 = time.time()
    ds = dataset(DataConfig.make(universe=args.universe), provider=args.provider)
    for sp in SPLITS:
        n = np.diff(ds.splits[sp].offsets)
        d = ds.dates(sp)
        print(f"{sp:5s} {d[0]} .. {d[-1]}  {len(n)} days, stocks/day "
              f"min {n.min()} median {int(np.median(n))} max {n.max()}")
    print(f"dataset {ds.config.universe}: panel {ds.x.shape}, fingerprint {ds.fingerprint}, "
          f"{time.time() - t0:.1f}s")


def pack(args) -> None:
    from replication.data.pack import write_pack

    t0 = time.time()
    stats = write_pack(load_market(args.provider), args.out, start=args.start, end=args.end)
    print(json.dumps(stats, indent=1, default=str))
    print(f"wrote {args.out} in {time.time() - t0:.1f}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m replication.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("info", info), ("build", build), ("pack", pack)):
        s = sub.add_parser(name, help=fn.__doc__)
        s.add_argument("--provider", default=None,
                       help="Qlib provider directory or pack file (default $QLIB_DATA, "
                            "else ~/.qlib/qlib_data/cn_data)")
        s.set_defaults(fn=fn)
        if name == "build":
            s.add_argument("--universe", default="all", choices=("all", "csi300"))
        if name == "pack":
            s.add_argument("--out", required=True)
            s.add_argument("--start", default="2010-01-04")
            s.add_argument("--end", default="2021-01-31")
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
