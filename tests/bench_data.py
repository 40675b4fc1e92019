"""Time the data layer on the real data and write the figures with their provenance.

    python tests/bench_data.py --provider ../shared/data/cn_data --out data/benchmarks.json

Measures (wall seconds, ``--repeat`` runs each, median reported with every run):
reading the provider directory, ``alpha158`` for all instruments and days, building
and re-loading the cached datasets of both universes, writing and reading the pack.
Run it on an otherwise idle machine; the README quotes its output.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(fn, repeat: int) -> tuple[dict, object]:
    runs, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        runs.append(round(time.perf_counter() - t0, 2))
    return {"median_s": statistics.median(runs), "runs_s": runs}, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["REPLICATION_CACHE"] = tmp  # cold cache, removed afterwards
        from replication.data import alpha158, load_market
        from replication.data.dataset import DataConfig, dataset
        from replication.data.pack import read_pack, write_pack

        res: dict = {}
        res["read_provider"], market = timed(lambda: load_market(a.provider), a.repeat)
        res["alpha158_all"], df = timed(lambda: alpha158(market, "all"), a.repeat)
        res["alpha158_all"]["rows"] = len(df)
        del df
        for universe in ("csi300", "all"):
            cfg = DataConfig(universe=universe)
            res[f"dataset_{universe}_build"], ds = timed(
                lambda: dataset(cfg, market=market, progress=False), 1)
            res[f"dataset_{universe}_build"]["panel"] = list(ds.x.shape)
            del ds
            res[f"dataset_{universe}_cached_load"], _ = timed(
                lambda: dataset(cfg, provider=a.provider, progress=False), a.repeat)
        pack = Path(tmp) / "cn_data.pack"
        res["pack_write"], stats = timed(lambda: write_pack(market, pack), 1)
        res["pack_write"]["bytes"] = stats["total"]
        res["pack_read"], _ = timed(lambda: read_pack(pack), a.repeat)
    from replication.run import git_commit

    commit = git_commit()
    res["provenance"] = {
        "git_commit": commit, "device": f"CPU {platform.processor() or platform.machine()}, "
                                        f"{os.cpu_count()} cores",
        "data": a.provider, "data_fingerprint": market.fingerprint(),
        "calendar": [str(market.calendar[0]), str(market.calendar[-1])],
        "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
