"""Every missing run of Table 1 (or Table 2), on several worker processes.

    python -m replication.campaign --universe csi300 --lanes 2 --device cpu
    python -m replication.campaign --models factorvae factorvae-port --heldout 50 100 200

A table cell is (model, seed, settings). Models with settings to choose (CA's depth)
first get one seed-0 run per setting; once all of them exist, the best validation
Rank IC picks the setting for the other seeds (that run doubles as the seed-0 cell).
Workers take the missing runs one at a time through :func:`replication.run.execute`:
finished runs are skipped and a cut-off run resumes from its checkpoint, so rerunning
the same command after an interruption (e.g. the end of a session) continues the
campaign. A worker backtests each Table 1 run it trains as soon as it ends (Table 3's
cells, :mod:`replication.portfolio`, written to ``<out>/../backtests``; CA's selection
runs too, as its depth is chosen only once all of them exist): the predictions live
under ``results/``, which a lent GPU host or a time-limited session does not keep, and
the small backtest file is what Table 3 needs of them. Do not start two campaigns on
the same output folder at once: they would train the same run twice.

On a CPU each worker uses ``--threads`` threads (default 1): two one-thread runs on
two cores finish more epochs per hour than one two-thread run.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from replication import portfolio, run, synthetic
from replication.data.dataset import DataConfig
from replication.tables import best_on_validation

TABLE1 = ("gru", "alstm", "gat", "trans", "sfm", "linear", "ca", "factorvae-prior", "factorvae")
TABLE2 = ("gru", "alstm", "gat", "trans", "sfm", "linear", "ca", "factorvae-port", "factorvae")
OPTIONS = {"ca": tuple({"variant": v} for v in ("ca0", "ca1", "ca2", "ca3"))}  # chosen on validation


def choices(models, seed: int, options: dict, data: DataConfig, train_cfg: dict, out) -> dict:
    """model -> the settings with the best validation Rank IC among its seed-``seed``
    runs, for the models whose selection runs all exist in ``out``."""
    chosen = {}
    for model in (m for m in models if m in options):
        found = [run.result_of(run.run_config(model, seed, data, o, train_cfg), out, train=False)
                 for o in options[model]]
        if all(found):
            best = best_on_validation(found)["config"]["model_config"]
            chosen[model] = {k: best[k] for k in options[model][0]}
    return chosen


def plan(models, seeds, options: dict, chosen: dict, heldout=(0,)) -> list[tuple[str, int, dict, int]]:
    """The cells (model, seed, settings, m) that can run now, seed by seed (every row
    gets a first seed early): selection runs of undecided models (Table 1 runs, m = 0,
    seed ``seeds[0]``), and every seed and m in ``heldout`` of the others (m = 0:
    Table 1; m > 0: Table 2, which takes a model's settings from Table 1's choice)."""
    cells = []
    for seed in seeds:
        for m in heldout:
            for model in models:
                if model not in options:
                    cells.append((model, seed, {}, m))
                elif model in chosen:
                    cells.append((model, seed, chosen[model], m))
                elif seed == seeds[0] and m == heldout[0]:
                    cells += [(model, seed, o, 0) for o in options[model]]
    return cells


@dataclass(frozen=True)
class Workspace:
    """Where a table notebook reads and writes, and on which data."""

    data: DataConfig
    out: Path  # tables; runs/ and backtests/ below it
    results: Path  # predictions, weights and checkpoints (git-ignored)
    provider: object  # Qlib provider directory or pack file (None: $QLIB_DATA)


def workspace(universe: str, smoke: bool = False, out="paper_tables", provider=None) -> Workspace:
    """The paper's split on ``provider``; or, with ``smoke``, the synthetic market
    (written once under cache/) with every output under cache/smoke/, so that a smoke
    run never overwrites real results."""
    if smoke:
        return Workspace(DataConfig.make(universe=universe, **synthetic.split()),
                         run.ROOT / "cache/smoke/paper_tables", run.ROOT / "cache/smoke/results",
                         synthetic.write_market(run.ROOT / "cache" / "synthetic"))
    return Workspace(DataConfig(universe=universe), run.ROOT / out, run.ROOT / "results", provider)


_market = None  # each worker's copy of the market, loaded once


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the campaign process ends, however it ends, so
    a stopped campaign leaves no worker training on (two trainings of one run would
    write the same checkpoint)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: stop the process group instead
        pass


def _start_worker(provider, threads: int) -> None:
    global _market
    import torch

    _die_with_parent()
    from replication.data import load_market

    torch.set_num_threads(threads)
    _market = load_market(provider)


def _train(job) -> str:
    config, provider, device, out, results, progress = job
    t0 = time.time()
    r = run.execute(config, provider, device, out, results, progress=progress, market=_market)
    if not config.get("heldout"):  # a Table 1 run: its Table 3 cells now, while its predictions exist
        for strategy in portfolio.strategies(config["model"]):
            portfolio.cell(r, strategy, _market, results, out.parent / "backtests")
    return (f"{r['run_id']}: valid Rank IC {r['valid']['rank_ic']:.4f}, "
            f"{r['epochs_trained']} epochs, {(time.time() - t0) / 60:.1f} min this session")


def campaign(models=TABLE1, seeds=range(5), options=OPTIONS, data: DataConfig = DataConfig(),
             train_cfg: dict | None = None, provider=None, device: str = "auto", lanes: int = 1,
             threads: int = 1, out=run.ROOT / "paper_tables" / "runs",
             results=run.ROOT / "results", dry_run: bool = False, heldout=(0,)) -> list[str]:
    """Train every missing run (``heldout``: the m of each cell, 0 for Table 1, e.g.
    (50, 100, 200) for Table 2); return the ids of the runs it trained (or would train)."""
    seeds, train_cfg, done = list(seeds), dict(train_cfg or {}), []
    heldout = tuple(heldout)
    while True:
        chosen = choices(models, seeds[0], options, data, train_cfg, out)
        configs = [run.run_config(mod, s, data, o, train_cfg, m)
                   for mod, s, o, m in plan(models, seeds, options, chosen, heldout)]
        missing = [c for c in configs if run.result_of(c, out, train=False) is None]
        if not missing:
            return done
        print(f"{len(missing)} runs to train ({len(configs) - len(missing)} of {len(configs)} done)",
              flush=True)
        done += [run.run_id(c) for c in missing]
        if dry_run:
            return done
        # progress bars from several workers would garble one terminal: one line per epoch then
        jobs = [(c, provider, device, Path(out), Path(results), lanes == 1 or run.run_id(c))
                for c in missing]
        with mp.get_context("spawn").Pool(lanes, _start_worker, (provider, threads)) as pool:
            for line in pool.imap_unordered(_train, jobs):  # a worker takes the next run when free
                print(time.strftime("%H:%M:%S"), line, flush=True)
            pool.close()  # let the workers exit on their own: the terminate() of leaving the
            pool.join()  # with-block could kill one mid-exit and leak its semaphore (a warning)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m replication.campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(run.MODELS),
                   help="default: Table 1's models, or Table 2's when --heldout has an m > 0")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--universe", default="all", choices=("all", "csi300"))
    p.add_argument("--epochs", type=int, help="max epochs (default: TrainConfig's)")
    p.add_argument("--heldout", nargs="+", type=int, default=[0], metavar="M",
                   help="stocks held out of training: 0 (Table 1, default) or e.g. 50 100 200 (Table 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--provider", default=None, help="Qlib provider directory or pack file")
    p.add_argument("--lanes", type=int, default=1, help="runs trained at once (worker processes)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per worker")
    p.add_argument("--out", default=str(run.ROOT / "paper_tables" / "runs"))
    p.add_argument("--results", default=str(run.ROOT / "results"))
    p.add_argument("--dry-run", action="store_true", help="list the missing runs, train nothing")
    a = p.parse_args(argv)
    train_cfg = {"max_epochs": a.epochs} if a.epochs else {}
    models = a.models or list(TABLE2 if any(a.heldout) else TABLE1)
    ids = campaign(models, a.seeds, OPTIONS, DataConfig(universe=a.universe), train_cfg, a.provider,
                   a.device, a.lanes, a.threads, a.out, a.results, a.dry_run, a.heldout)
    print("\n".join(ids) if a.dry_run else f"trained {len(ids)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
