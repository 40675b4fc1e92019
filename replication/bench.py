"""Training throughput of each model, and the projected time of the tables' campaigns.

    python -m replication.bench --universe csi300 --device cpu          # make bench

For each model, on the real dataset of ``--universe``: ``--warmup`` training steps,
then ``--repeats`` blocks of ``--steps`` steps (the exact step of ``train.fit``: one
trading day, Adam, gradient clipping), each block timed as a whole with one device
synchronisation at its end; the step time is the median of the blocks' means. One
pass of predictions over the validation days is timed the same way (median of
``--repeats``). Then:

- epoch = training days x step + validation days x prediction step (what ``fit`` does);
- run = epoch x the median number of epochs of the committed runs of that model and
  universe (early stopping), else of all committed runs of the universe, else
  ``max_epochs``; the source is written beside each figure;
- campaign projection, one run at a time: Table 1 = 5 seeds of every benchmarked model;
  Table 2 = 3 held-out sizes x 5 seeds of every model except FactorVAE-prior, plus
  FactorVAE-port (its FactorVAE time when not benchmarked); Table 3 trains nothing.

Writes ``paper_tables/bench/<device kind>-<universe>.{json,md}`` (device name, threads,
git commit, torch version, date).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from replication import run
from replication.data.dataset import DataConfig, dataset
from replication.data.provider import DataError, load_market
from replication.files import ROOT, git_commit, host_cpu, write_atomic
from replication.tables import DISPLAY, markdown
from replication.train import DeviceData, TrainConfig, optimizer, predict, resolve_device, train_step

SEEDS, TABLE2_SIZES = 5, 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Median over ``repeats`` of the seconds ``fn()`` takes (synchronised at the end)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def epochs_per_run(model: str, universe: str, runs_dir: Path, default: int) -> tuple[float, str]:
    """Median epochs of the committed runs of ``model`` on ``universe`` (early stopping)."""
    found = {}
    for path in Path(runs_dir).glob("*.json"):
        r = json.loads(path.read_text())
        if r["config"]["data"]["universe"] == universe:
            found.setdefault(r["config"]["model"], []).append(r["epochs_trained"])
    if found.get(model):
        return float(np.median(found[model])), f"median of {len(found[model])} {model} runs"
    every = [e for v in found.values() for e in v]
    if every:
        return float(np.median(every)), f"median of all {len(every)} {universe} runs"
    return float(default), "max_epochs (no committed run)"


def bench_model(model: str, ds, data: DeviceData, device: torch.device, steps: int,
                warmup: int, repeats: int) -> dict:
    """Seconds per training step and per validation prediction day of ``model``."""
    cfg = run.run_config(model, 0, ds.config)
    torch.manual_seed(0)
    net = run.build_model(cfg).to(device)
    tc = TrainConfig.make(**cfg["train"])
    opt, gen = optimizer(net, tc), torch.Generator(device=device).manual_seed(0)
    days = np.random.default_rng(0).permutation(len(data.splits["train"]["days"]))
    cursor = iter(np.resize(days, warmup + steps * repeats))

    def block(n):
        net.train()
        for _ in range(n):
            train_step(net, opt, data, int(next(cursor)), gen, tc.grad_clip)

    block(warmup)
    step = _timed(lambda: block(steps), repeats, device) / steps
    n_valid = len(data.splits["valid"]["days"])
    valid = _timed(lambda: predict(net, data, "valid"), repeats, device) / n_valid
    return {"step_seconds": step, "valid_day_seconds": valid}


def project(rows: list[dict]) -> dict:
    """GPU/CPU seconds of the Table 1 and Table 2 campaigns, one run at a time."""
    per_run = {r["model"]: r["run_seconds"] for r in rows}
    t1 = SEEDS * sum(per_run.values())
    t2_models = [m for m in per_run if m != "factorvae-prior"]
    port = per_run.get("factorvae-port", per_run.get("factorvae"))
    t2 = TABLE2_SIZES * SEEDS * (sum(per_run[m] for m in t2_models if m != "factorvae-port")
                                 + (port or 0.0))
    return {"models": sorted(per_run), "table1_seconds": t1, "table2_seconds": t2,
            "table3_seconds": 0.0, "total_seconds": t1 + t2, "runs_at_once": 1}


def bench(models, data_cfg: DataConfig = DataConfig(universe="csi300"), device: str = "auto",
          provider=None, steps: int = 50, warmup: int = 5, repeats: int = 3,
          out=ROOT / "paper_tables" / "bench", runs_dir=ROOT / "paper_tables" / "runs") -> dict:
    """Benchmark ``models``; write and return the result (see the module docstring)."""
    dev, universe = resolve_device(device), data_cfg.universe
    load = os.getloadavg()[0]  # other work on the machine slows every figure down
    ds = dataset(data_cfg, market=load_market(provider))
    data = DeviceData(ds, dev)
    sizes = np.diff(ds.splits["train"].offsets)
    n_train, n_valid = len(ds.splits["train"]), len(ds.splits["valid"])
    rows = []
    for model in tqdm(models, desc="models"):
        t = bench_model(model, ds, data, dev, steps, warmup, repeats)
        epoch = n_train * t["step_seconds"] + n_valid * t["valid_day_seconds"]
        epochs, source = epochs_per_run(model, universe, runs_dir,
                                        TrainConfig.make(**run.MODELS[model].train).max_epochs)
        rows.append({"model": model, "step_ms": round(1e3 * t["step_seconds"], 2),
                     "valid_day_ms": round(1e3 * t["valid_day_seconds"], 2),
                     "epoch_seconds": round(epoch, 1), "epochs_per_run": epochs,
                     "epochs_source": source, "run_seconds": round(epoch * epochs, 1)})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    result = {"device": name, "universe": universe, "stocks_per_day_median": int(np.median(sizes)),
              "train_days": n_train, "valid_days": n_valid, "steps": steps, "repeats": repeats,
              "warmup": warmup, "rows": rows, "projection": project(rows),
              "cpu_count": os.cpu_count(), "cpu": host_cpu(), "load_average_at_start": round(load, 2),
              "git_commit": git_commit(), "torch": torch.__version__,
              "data_fingerprint": ds.fingerprint, "date": time.strftime("%Y-%m-%d %H:%M")}
    stem = Path(out) / f"{dev.type}-{universe}"
    write_atomic(stem.with_suffix(".json"), (json.dumps(result, indent=1) + "\n").encode())
    write_report(out, dev.type, universe)
    return result


def write_report(out, kind: str, universe: str) -> str:
    """Write ``<out>/<kind>-<universe>.md`` from its JSON and, when present, Qlib's GRU
    timing ``<out>/qlib-gru-<kind>-<universe>.json`` (``tests/bench_qlib_gru.py``)."""
    stem = Path(out) / f"{kind}-{universe}"
    path = stem.with_suffix(".json")
    if not path.is_file():
        raise DataError(f"no benchmark {path}: run python -m replication.bench --universe {universe}")
    qlib = Path(out) / f"qlib-gru-{kind}-{universe}.json"
    text = report(json.loads(path.read_text()), json.loads(qlib.read_text()) if qlib.is_file() else None)
    write_atomic(stem.with_suffix(".md"), text.encode())
    return text


def report(r: dict, qlib: dict | None = None) -> str:
    """The benchmark as markdown; ``qlib``: Qlib's own GRU epoch on the same data, beside ours."""
    import pandas as pd

    df = pd.DataFrame(r["rows"]).assign(model=lambda d: d["model"].map(lambda m: DISPLAY.get(m, m)))
    p = r["projection"]
    peer = []
    if qlib is not None:
        q, ours = qlib["seconds"], {row["model"]: row for row in r["rows"]}.get("gru")
        peer = ["", f"Qlib's own GRU (`tests/bench_qlib_gru.py`: pyqlib {qlib['pyqlib']}, its "
                f"`pytorch_gru_ts` on `TSDatasetH`, the same data, split, features, processors and "
                f"hyper-parameters, {qlib['device']}, {qlib['dataloader_workers']} loader workers, load "
                f"average {qlib['load_average_at_start']} at its start, {qlib['date']}): one epoch takes "
                f"{q['epoch']:.0f} s — {q['train_epoch']:.0f} s for {qlib['train_batches']} training "
                f"batches of {qlib['batch_size']} samples ({qlib['train_samples']} in all; Qlib's "
                f"sampler alone, with no model, takes {q['train_loader_alone']:.0f} s of a pass) and "
                f"{q['valid_epoch']:.0f} s of validation — plus {q['handler_and_dataset']:.0f} s "
                f"to build its dataset"
                + (f"; our GRU's epoch above: {ours['epoch_seconds']:.0f} s." if ours else ".")]
    host = f" ({r['cpu']})" if "cpu" in r else ""  # recorded since 2026-12-04
    return "\n".join([
        f"# Training throughput — {r['device']}, universe {r['universe']}", "",
        f"{r['stocks_per_day_median']} stocks a day (median), {r['train_days']} training and "
        f"{r['valid_days']} validation days; step time = median of {r['repeats']} blocks of "
        f"{r['steps']} steps; commit {r['git_commit'][:10]}, torch {r['torch']}, {r['date']}; "
        f"{r['cpu_count']} CPUs{host}, load average {r['load_average_at_start']} when it started "
        f"(other processes sharing the machine slow every figure down).", "",
        markdown(df),
        f"Projected, one run at a time, for the models above: Table 1 "
        f"{p['table1_seconds'] / 3600:.1f} h, Table 2 {p['table2_seconds'] / 3600:.1f} h, "
        f"total {p['total_seconds'] / 3600:.1f} h.", *peer, ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m replication.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["factorvae", "gru"], choices=list(run.MODELS))
    p.add_argument("--universe", default="csi300", choices=("all", "csi300"))
    p.add_argument("--device", default="auto")
    p.add_argument("--provider", default=None, help="Qlib provider directory or pack file")
    p.add_argument("--steps", type=int, default=50, help="training steps per timed block")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed blocks (the median is kept)")
    p.add_argument("--out", default=str(ROOT / "paper_tables" / "bench"))
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the markdown from the saved JSON (and Qlib's GRU timing), measure nothing")
    a = p.parse_args(argv)
    try:
        if a.report_only:
            print(write_report(a.out, resolve_device(a.device).type, a.universe))
            return 0
        r = bench(a.models, DataConfig(universe=a.universe), a.device, a.provider, a.steps,
                  a.warmup, a.repeats, a.out)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
