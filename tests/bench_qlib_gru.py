"""Qlib's own GRU, one epoch timed on the same data: the peer of our GRU row in
``paper_tables/bench/``.

    PYTHONPATH=. QLIB_ENV/bin/python tests/bench_qlib_gru.py --provider ../shared/data/cn_data \
        --out paper_tables/bench/qlib-gru-cpu-csi300.json

QLIB_ENV: an environment with pyqlib and torch (pyqlib is never a dependency of the
package). What runs is Qlib's benchmark GRU for Alpha158
(``qlib.contrib.model.pytorch_gru_ts.GRU``: 2 layers, hidden 64, lr 2e-4, batch 800,
MSE, gradient values clipped at 3) on Qlib's ``TSDatasetH`` (step_len 20) over a
``DataHandlerLP`` of the same 20 Alpha158 expressions and label as ours
(``tests/qlib_reference.QLIB_EXPRESSIONS``, i.e. Alpha158 + FilterCol), Qlib's
benchmark processors (RobustZScoreNorm with clipping and Fillna on the features,
fitted on the training years; DropnaLabel and CSRankNorm on the label), CSI300, the
paper's split. Timed: building the handler and dataset (Qlib computes the features),
one ``train_epoch`` over the training loader built as ``GRU.fit`` builds it, and one
``test_epoch`` over the validation loader; also one pass of the training loader alone
(Qlib's sampler assembling the batches, no model). ``GRU.fit`` itself would also run
``test_epoch`` over the whole training set every epoch; that pass is not counted.

Same conditions as ``python -m replication.bench``: one torch thread
(``--threads``), DataLoader without worker processes (``--workers``), on the CPU.
The JSON records the machine's load average: figures taken beside training runs
are slower than on an idle machine, ours and Qlib's alike.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from qlib_reference import QLIB_EXPRESSIONS  # noqa: E402

from replication.data.dataset import DataConfig  # noqa: E402
from replication.files import write_atomic  # noqa: E402

SPLIT = DataConfig()


def handler_config(universe: str) -> dict:
    """Qlib's benchmark handler for the 20 features, on the paper's split."""
    names = list(QLIB_EXPRESSIONS)
    fit = {"fit_start_time": SPLIT.train[0], "fit_end_time": SPLIT.train[1]}
    return {
        "instruments": universe, "start_time": "2009-11-01", "end_time": SPLIT.test[1],
        "data_loader": {"class": "QlibDataLoader", "module_path": "qlib.data.dataset.loader",
                        "kwargs": {"config": {"feature": ([QLIB_EXPRESSIONS[n] for n in names[:-1]], names[:-1]),
                                              "label": ([QLIB_EXPRESSIONS[names[-1]]], [names[-1]])}}},
        "infer_processors": [
            {"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature", "clip_outlier": True, **fit}},
            {"class": "Fillna", "kwargs": {"fields_group": "feature"}}],
        "learn_processors": [{"class": "DropnaLabel"},
                             {"class": "CSRankNorm", "kwargs": {"fields_group": "label"}}],
    }


def bench(provider: str, universe: str = "csi300", threads: int = 1, workers: int = 0) -> dict:
    import qlib
    import torch
    from qlib.contrib.model.pytorch_gru_ts import GRU
    from qlib.data.dataset import TSDatasetH
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.model.utils import ConcatDataset
    from torch.utils.data import DataLoader

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    qlib.init(provider_uri=provider, region="cn", logging_level=logging.WARNING, kernels=max(threads, 1))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    handler = DataHandlerLP(**handler_config(universe))
    ds = TSDatasetH(handler=handler, step_len=SPLIT.T,
                    segments={"train": SPLIT.train, "valid": SPLIT.valid, "test": SPLIT.test})
    data_s = time.perf_counter() - t0

    model = GRU(d_feat=len(QLIB_EXPRESSIONS) - 1, hidden_size=64, num_layers=2, dropout=0.0,
                n_epochs=1, lr=2e-4, early_stop=10, batch_size=800, metric="loss", loss="mse",
                n_jobs=workers, GPU=-1, seed=0)

    def loader(split: str, shuffle: bool) -> DataLoader:  # as GRU.fit builds them
        dl = ds.prepare(split, col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
        dl.config(fillna_type="ffill+bfill")
        return DataLoader(ConcatDataset(dl, np.ones(len(dl))), batch_size=800, shuffle=shuffle,
                          num_workers=workers, drop_last=True)

    train, valid = loader("train", True), loader("valid", False)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    sampler_s = timed(lambda: [None for _ in train])
    train_s = timed(lambda: model.train_epoch(train))
    valid_s = timed(lambda: model.test_epoch(valid))
    return {
        "what": "Qlib's GRU (pytorch_gru_ts), one epoch: train_epoch + test_epoch(valid)",
        "universe": universe, "split": {"train": SPLIT.train, "valid": SPLIT.valid},
        "train_samples": len(train.dataset), "train_batches": len(train), "batch_size": 800,
        "valid_samples": len(valid.dataset),
        "seconds": {"handler_and_dataset": round(data_s, 1), "train_loader_alone": round(sampler_s, 1),
                    "train_epoch": round(train_s, 1), "valid_epoch": round(valid_s, 1),
                    "epoch": round(train_s + valid_s, 1)},
        "step_ms": round(1000 * train_s / len(train), 2),
        "device": f"CPU ({threads} threads)", "dataloader_workers": workers,
        "load_average_at_start": round(load, 2), "cpus": os.cpu_count(),
        "pyqlib": qlib.__version__, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--provider", required=True, help="Qlib provider directory")
    p.add_argument("--universe", default="csi300")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", help="JSON file to write")
    a = p.parse_args(argv)
    if not Path(a.provider).is_dir():
        p.error(f"--provider {a.provider}: no such directory (a Qlib provider directory)")
    from replication.files import git_commit

    result = {**bench(a.provider, a.universe, a.threads, a.workers), "git_commit": git_commit()}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        write_atomic(Path(a.out), (text + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
