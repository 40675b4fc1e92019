"""One run = one command = one result file.

    python -m replication.run --model factorvae --seed 0 --universe csi300 --device auto

trains one model with one seed, evaluates it, and writes ``<out>/<run id>.json``
(config, valid/test Rank IC and ICIR, the daily test Rank IC, epochs, wall time,
device, git commit, data fingerprint) atomically. The predictions (mu, sigma of every
stock-day of the test and, for Table 3's TDrisk, the validation period) go to
``<results>/<run id>.npz`` (git-ignored); FactorVAE's seed-0 test predictions on CSI300
members also go, compressed, to ``<out>/../predictions/`` (committed, for reviewers
and the backtest's cross-check against Qlib). A run whose result file exists with the
same config is skipped, so rerunning a table only computes what is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from replication import baselines, factor_models, robustness
from replication.data.dataset import DataConfig, DayDataset, dataset
from replication.data.provider import DataError, load_market
from replication.files import ROOT, flush_subnormals, git_commit, host_cpu, write_atomic
from replication.metrics import daily_rank_ic, summarize
from replication.model import VARIANTS, FactorVAE, ModelConfig
from replication.train import DeviceData, TrainConfig, fit, mean_factor_kl, predict, resolve_device


@dataclass(frozen=True)
class ModelSpec:
    """How the runner makes a model. Every model offers ``loss(x, y, generator)`` ->
    (loss, nll, kl) and ``predict(x)`` -> (mu, sigma) for one day's x (N, T, C); models
    without a risk estimate return sigma = NaN. Optional: ``after_epoch(data)``, called
    with the DeviceData after each epoch's training steps (CA's factor means), and a
    ``weight_decay`` attribute (Adam's L2 term, 0 if absent)."""

    config: type  # an Overridable dataclass: the model's hyper-parameters
    build: Callable  # config -> nn.Module
    train: dict = field(default_factory=dict)  # the model's TrainConfig defaults (e.g. Qlib's lr)
    fixed: dict = field(default_factory=dict)  # config fields the model name fixes
    defaults: dict = field(default_factory=dict)  # settings chosen on validation for this model


# FactorVAE's KL weight gamma of eq. (17), chosen on validation (paper_tables/selection,
# seed 0, CSI300, analytic recon, lr 1e-4): valid Rank IC 0.0668 at gamma = 1 (the
# posterior collapsed onto the prior), 0.0792 at 0.1, 0.0787 at 0.01. It applies to the
# variants with a KL term; FactorVAE-prior has none (its config keeps ModelConfig's
# default, which its loss never reads).
KL_DEFAULTS: dict = {"gamma": 0.1}
MODELS: dict[str, ModelSpec] = {
    v: ModelSpec(ModelConfig, FactorVAE, fixed={"variant": v},
                 defaults=KL_DEFAULTS if v != "factorvae-prior" else {}) for v in VARIANTS}
MODELS.update({n: ModelSpec(c, b, train=t)  # the Table 1 baselines, in the paper's order
               for n, (c, b, t) in {**baselines.MODELS, **factor_models.MODELS}.items()})


def run_config(model: str, seed: int, data: DataConfig, model_cfg: dict | None = None,
               train_cfg: dict | None = None, heldout: int = 0) -> dict:
    """The full, JSON-able configuration of a run (what its result file must match).
    ``heldout`` = m > 0: a Table 2 run, trained without the m stocks that
    :func:`replication.robustness.heldout` draws with the run's seed (the key is absent
    from Table 1 runs, whose ids it therefore leaves as they were)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if heldout < 0:
        raise ValueError(f"heldout must be >= 0 (0: no stock held out), got {heldout}")
    spec = MODELS[model]
    config = {"model": model, "seed": seed, "data": asdict(data),
              "model_config": asdict(spec.config.make(**spec.fixed, **{**spec.defaults, **(model_cfg or {})})),
              "train": asdict(TrainConfig.make(seed=seed, **{**spec.train, **(train_cfg or {})}))}
    if heldout:
        config["heldout"] = heldout
    return json.loads(json.dumps(config))  # tuples -> lists: equal to what a result file holds


def build_model(config: dict):
    """The untrained model of a run ``config`` (its model_config applied)."""
    spec = MODELS[config["model"]]
    return spec.build(spec.config.make(**config["model_config"]))


def run_id(config: dict) -> str:
    digest = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=4)
    m = f"-m{config['heldout']}" if config.get("heldout") else ""
    return f"{config['model']}-{config['data']['universe']}{m}-seed{config['seed']}-{digest.hexdigest()}"


def run_dataset(config: dict, market, progress: bool = False) -> tuple[DayDataset, np.ndarray | None]:
    """The dataset a run trains on and its held-out panel columns (None: Table 1 run):
    Table 2's are drawn from the universe's dataset, then left out of a dataset of their own."""
    data = DataConfig.make(**config["data"])
    ds = dataset(data, market=market, progress=progress)
    if not config.get("heldout"):
        return ds, None
    cols = robustness.heldout(ds, config["heldout"], config["seed"])
    out = dataset(data, market=market, progress=progress, exclude=ds.codes[cols])
    assert (out.codes == ds.codes).all()  # one universe, one panel layout
    return out, cols


def finished(path: Path, config: dict) -> dict | None:
    """The result in ``path`` if it is complete and was made with ``config``."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("config") == config else None


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def split_predictions(model, data: DeviceData, ds, split: str) -> dict[str, np.ndarray]:
    """date, instrument, mu, sigma and raw label of every sample of ``split`` (flat)."""
    sp = ds.splits[split]
    mu, sigma = predict(model, data, split)
    return dict(date=np.repeat(ds.calendar[sp.days], np.diff(sp.offsets)).astype(str),
                instrument=ds.codes[sp.stock], mu=mu, sigma=sigma, label=sp.label)


def predictions(config: dict, split: str = "test", results: Path = ROOT / "results",
                provider=None, market=None) -> dict[str, np.ndarray]:
    """A finished run's predictions of ``split`` ("test" or "valid"), from
    ``<results>/<run id>.npz``: date, instrument, mu, sigma, label. A file written
    before validation predictions were kept gets them from the run's saved best
    weights (``<run id>.pt``), recomputed on the CPU and added to the file."""
    rid, results = run_id(config), Path(results)
    path, weights = results / f"{rid}.npz", results / f"{rid}.pt"
    retrain = (f"train it here: python -m replication.run --model {config['model']} --seed "
               f"{config['seed']} --universe {config['data']['universe']} --retrain (with the same "
               f"settings as its result file)")
    if not path.is_file():
        raise DataError(f"no predictions of run {rid} in {results} ({path.name} is missing); {retrain}")
    try:
        z = dict(np.load(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable prediction file ({exc}); {retrain}") from None
    prefix = "" if split == "test" else f"{split}_"
    if prefix + "mu" not in z:
        if not weights.is_file():
            raise DataError(f"{path} has no {split} predictions and the run's weights {weights} "
                            f"are missing; {retrain}")
        ds, _ = run_dataset(config, market or load_market(provider))
        model = build_model(config)
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        made = split_predictions(model, DeviceData(ds, torch.device("cpu")), ds, split)
        z.update({prefix + k: v for k, v in made.items()})
        write_atomic(path, _npz(**z))
    return {k: z[prefix + k] for k in ("date", "instrument", "mu", "sigma", "label")}


def execute(config: dict, provider=None, device: str = "auto", out: Path = ROOT / "paper_tables" / "runs",
            results: Path = ROOT / "results", progress: bool | str = True, market=None,
            retrain: bool = False) -> dict:
    """Run ``config`` unless its result file already holds it (``retrain``: run it
    anyway, e.g. to remake predictions deleted or made elsewhere); return the result.
    ``progress``: True, progress bars; False, silence; a string (e.g. the run id), one
    printed line per epoch that starts with it, as :func:`replication.train.fit`."""
    out, results, rid = Path(out), Path(results), run_id(config)
    path = out / f"{rid}.json"
    done = finished(path, config)
    if done is not None and not retrain:
        return done
    t0 = time.time()
    commit = git_commit()  # the code that runs, even if the tree changes meanwhile
    dev = resolve_device(device)
    if dev.type == "cpu":
        flush_subnormals()  # opt-in: REPLICATION_FLUSH_SUBNORMALS=1
    market = market or load_market(provider)
    data_cfg = DataConfig.make(**config["data"])
    ds, heldout = run_dataset(config, market, progress is True)
    torch.manual_seed(config["seed"])
    model = build_model(config)
    data = DeviceData(ds, dev)
    checkpoint = results / "checkpoints" / f"{rid}.pt"  # a cut-off run resumes from here
    segment = {"git_commit": commit, "started": time.time(),
               "cpu": host_cpu() if dev.type == "cpu" else None}
    history = fit(model, ds, TrainConfig.make(**config["train"]), dev, progress, data,
                  checkpoint=checkpoint, segment=segment)
    segments = history["segments"]
    test, valid = ds.splits["test"], ds.splits["valid"]
    preds, valid_preds = (split_predictions(model, data, ds, s) for s in ("test", "valid"))
    daily = daily_rank_ic(preds["mu"], test.label, test.offsets)
    write_atomic(results / f"{rid}.npz",
                 _npz(**preds, **{f"valid_{k}": v for k, v in valid_preds.items()}))
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)  # the restored best epoch, for later diagnostics
    write_atomic(results / f"{rid}.pt", weights.getvalue())
    if config["model"] == "factorvae" and config["seed"] == 0 and heldout is None:
        d, j = np.repeat(test.days, np.diff(test.offsets)), test.stock
        member = market.membership("csi300")[:, [market.column(c) for c in ds.codes]][d, j] \
            if data_cfg.universe != "csi300" else np.ones(len(preds["mu"]), bool)
        write_atomic(out.parent / "predictions" / f"{rid}.npz",
                     _npz(**{k: v[member] for k, v in preds.items()}))
    result = {
        "config": config, "run_id": rid,
        "valid": summarize(daily_rank_ic(valid_preds["mu"], valid.label, valid.offsets)),
        "test": summarize(daily),  # Table 2 runs: over every stock, held-out or not
        "heldout": None if heldout is None else _heldout_result(preds, ds.codes[heldout]),
        "seen_heldout": None if heldout is not None else robustness.seen_heldout(preds, ds, config["seed"]),
        "test_daily_rank_ic": {"dates": ds.dates("test").astype(str).tolist(),
                               "values": _daily_json(daily)},
        "epochs_trained": history["epochs_trained"], "best_epoch": history["best_epoch"],
        # posterior collapse check: factors whose mean KL stays ~0 carry no information
        "valid_factor_kl": [round(float(v), 5) for v in mean_factor_kl(model, data, "valid")]
        if isinstance(model, FactorVAE) and model.encoder is not None else None,
        "history": history["history"],
        # wall time of the run; a resumed run adds the epochs of its earlier stretches
        "wall_seconds": round(time.time() - t0 + sum(
            h["seconds"] for h in history["history"][:segments[-1]["from_epoch"]]), 1),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)",
        "cpu": host_cpu(),  # on a CPU, the kernel path decides bit-for-bit repeats
        "git_commit": ",".join(dict.fromkeys(s["git_commit"] for s in segments)),
        "segments": [{"from_epoch": s["from_epoch"], "git_commit": s["git_commit"],
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(s["started"])),
                      "cpu": s.get("cpu")}  # a resumed run may change host or flushing
                     for s in segments],
        "data_fingerprint": ds.fingerprint,
        "data_source": str(market.source),
        "data_range": [str(ds.calendar[0]), str(ds.calendar[-1])],
        "torch": torch.__version__,
    }
    write_atomic(path, (json.dumps(result, indent=1) + "\n").encode())
    checkpoint.unlink(missing_ok=True)
    return result


def _daily_json(values: np.ndarray) -> list:
    return [None if np.isnan(v) else round(float(v), 6) for v in values]


def _heldout_result(preds: dict, codes: np.ndarray) -> dict:
    """Table 2's numbers: Rank IC / ICIR over the held-out stocks (and who they were)."""
    daily = robustness.daily_rank_ic_over(preds, codes)
    return {"m": len(codes), "codes": codes.tolist(), "test": summarize(daily),
            "test_daily_rank_ic": _daily_json(daily)}


def result_of(config: dict, out: Path, train: bool = True, **execute_kwargs) -> dict | None:
    """The run's result: trained now if it is missing and ``train``; None if it is
    missing and not ``train`` (tables are then built from the runs that exist)."""
    if train:
        return execute(config, out=out, **execute_kwargs)
    return finished(Path(out) / f"{run_id(config)}.json", config)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m replication.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--universe", default="all", choices=("all", "csi300"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0 ...")
    p.add_argument("--provider", default=None, help="Qlib provider directory or pack file")
    p.add_argument("--epochs", type=int, help="max epochs (default: TrainConfig's)")
    p.add_argument("--lr", type=float)
    p.add_argument("--recon", choices=("analytic", "sample"), help="FactorVAE's eq. (17) switch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model hyper-parameter, e.g. --set variant=ca0 (repeatable)")
    p.add_argument("--heldout", type=int, default=0, metavar="M",
                   help="Table 2: hold out M stocks (drawn with --seed) from training and validation")
    p.add_argument("--patience", type=int, help="early-stopping patience (default: TrainConfig's)")
    p.add_argument("--out", default=str(ROOT / "paper_tables" / "runs"))
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--retrain", action="store_true",
                   help="train even if the result file exists (it is rewritten), e.g. to remake "
                        "the predictions that Table 3 needs on this machine")
    a = p.parse_args(argv)
    train = {k: v for k, v in (("max_epochs", a.epochs), ("lr", a.lr), ("patience", a.patience))
             if v is not None}
    model_cfg = {"recon": a.recon} if a.recon else {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set needs KEY=VALUE, got {item!r}")
        try:
            model_cfg[key] = json.loads(value)  # numbers, true/false; else the plain string
        except ValueError:
            model_cfg[key] = value
    try:
        config = run_config(a.model, a.seed, DataConfig(universe=a.universe), model_cfg, train, a.heldout)
    except ValueError as exc:  # an option the model does not have, or a bad value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        r = execute(config, a.provider, a.device, Path(a.out), Path(a.results), retrain=a.retrain)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{r['run_id']}: test Rank IC {r['test']['rank_ic']:.4f} ICIR {r['test']['rank_icir']:.3f} "
          f"(valid {r['valid']['rank_ic']:.4f}), {r['epochs_trained']} epochs, {r['wall_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
