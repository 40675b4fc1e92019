"""The Transformer's last-position shortcut (``baselines._last_position``), timed
against Qlib's full computation on the same data, same machine, same process.

    PYTHONPATH=. OMP_NUM_THREADS=1 python tests/bench_transformer_last_position.py \
        --provider ../shared/data/cn_data --out paper_tables/bench/trans-last-position-cpu-csi300.json

Each version takes ``--steps`` training steps (``train.train_step``, the exact step of
``train.fit``, on CSI300 days) in turns, ``--rounds`` times each, alternating so that a
change in the machine's load falls on both; the step time of a version is the median
over its rounds. The full computation is the shortcut's
reference in ``tests/test_baselines.py`` (every layer at every position, then v_T).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication import baselines as B  # noqa: E402
from replication.bench import _timed  # noqa: E402
from replication import run  # noqa: E402
from replication.data import load_market  # noqa: E402
from replication.data.dataset import DataConfig, dataset  # noqa: E402
from replication.files import git_commit, write_atomic  # noqa: E402
from replication.train import DeviceData, TrainConfig, optimizer, train_step  # noqa: E402


def full_forward(self, x, mask=None):
    """Qlib's computation: the whole encoder, every position, then v_T."""
    return self.decoder_layer(self.encoder(self.pos_encoder(self.feature_layer(x)))[:, -1])[:, 0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--provider", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load = os.getloadavg()[0]
    ds = dataset(DataConfig(universe="csi300"), market=load_market(a.provider))
    dev = torch.device("cpu")
    data = DeviceData(ds, dev)
    cfg = run.run_config("trans", 0, ds.config)
    torch.manual_seed(0)
    net = run.build_model(cfg)
    tc = TrainConfig.make(**cfg["train"])
    opt, gen = optimizer(net, tc), torch.Generator().manual_seed(0)
    shortcut, ms = B.Transformer.forward, {"last_position": [], "full_encoder": []}
    for r in range(a.rounds):
        for name, forward in (("last_position", shortcut), ("full_encoder", full_forward)):
            B.Transformer.forward = forward
            days = range(r * a.steps, (r + 1) * a.steps)  # the same days for both versions
            ms[name].append(1e3 * _timed(lambda: [train_step(net, opt, data, k, gen, tc.grad_clip)
                                                  for k in days], 1, dev) / a.steps)
    B.Transformer.forward = shortcut
    step = {k: round(statistics.median(v), 1) for k, v in ms.items()}
    result = {"what": "Transformer training step on a CSI300 day, ms (median over rounds)",
              "step_ms": step, "rounds_ms": {k: [round(x, 1) for x in v] for k, v in ms.items()},
              "speedup": round(step["full_encoder"] / step["last_position"], 2),
              "device": f"CPU ({torch.get_num_threads()} threads)", "cpu_count": os.cpu_count(),
              "load_average_at_start": round(load, 2), "git_commit": git_commit(),
              "torch": torch.__version__, "data_fingerprint": ds.fingerprint,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    write_atomic(a.out, (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
