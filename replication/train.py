"""Training and prediction: one trading day's cross-section per step, all on one device.

The normalised panel ``(D, S, C)`` and each split's index arrays are moved to the
device once; a day's batch is the gather ``X[s-T+1 : s+1, stocks]``. The loss is
accumulated on the device and read back once per epoch. Early stopping watches the
validation Rank IC of mu_pred and restores the best epoch's weights.

With ``checkpoint`` set, the full training state (weights, Adam moments, best weights,
history and every random generator) is written atomically after each epoch, and a
later call resumes from it: a run cut off after epoch e continues with epoch e + 1 and
ends with exactly the numbers of an uninterrupted run (on the CPU; on a GPU up to
the non-determinism of its kernels). CPU campaigns longer than a session need this.
"""
from __future__ import annotations

import copy
import inspect
import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from replication.config import Overridable
from replication.data.dataset import DayDataset
from replication.files import write_atomic
from replication.metrics import daily_rank_ic, summarize


@dataclass(frozen=True)
class TrainConfig(Overridable):
    """Optimisation settings (the paper gives none)."""

    lr: float = 1e-4  # Adam learning rate; chosen on validation (paper_tables/selection)
    max_epochs: int = 100  # upper bound; early stopping ends runs well before
    patience: int = 10  # epochs without a better validation Rank IC before stopping
    grad_clip: float = 3.0  # gradient value clipping, as Qlib's benchmark models
    seed: int = 0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DeviceData:
    """The dataset's arrays on ``device``: the panel and each split's samples.

    ``static=True`` also keeps every day padded to one size P (the largest day of any
    split): ``padded(split, k)`` then gives fixed shapes, as CUDA graphs and compiled
    kernels need, with a mask of the real stocks (padded rows: x = 0, target = 0).
    """

    def __init__(self, ds: DayDataset, device: torch.device, static: bool = False):
        self.T = ds.config.T
        self.x = torch.from_numpy(np.ascontiguousarray(ds.x)).to(device)  # (D, S, C)
        self.splits = {}
        self.size = max(int(np.diff(sp.offsets).max(initial=0)) for sp in ds.splits.values())
        for name, sp in ds.splits.items():
            self.splits[name] = {
                "days": sp.days.tolist(), "offsets": sp.offsets.tolist(),  # host ints: no sync
                "stock": torch.from_numpy(sp.stock).to(device),
                "target": torch.from_numpy(sp.target).to(device)}
            if static:
                n = np.diff(sp.offsets)
                mask = np.arange(self.size)[None, :] < n[:, None]  # (days, P)
                stock = np.zeros(mask.shape, dtype=np.int64)
                stock[mask] = sp.stock
                target = np.zeros(mask.shape, dtype=np.float32)
                target[mask] = np.nan_to_num(sp.target)  # test days have no target
                self.splits[name].update(
                    stock_padded=torch.from_numpy(stock).to(device),
                    mask=torch.from_numpy(mask).to(device),
                    target_padded=torch.from_numpy(target).to(device))

    def batch(self, split: str, k: int):
        """Day k of ``split``: x (N, T, C) and the training target (N,)."""
        sp = self.splits[split]
        s, a, b = sp["days"][k], sp["offsets"][k], sp["offsets"][k + 1]
        x = self.x[s - self.T + 1:s + 1, sp["stock"][a:b]]  # (T, N, C)
        return x.transpose(0, 1), sp["target"][a:b]  # (N, T, C), (N,)

    def padded(self, split: str, k: int):
        """Day k of ``split`` padded to P stocks: x (P, T, C), target (P,), mask (P,)."""
        sp = self.splits[split]
        if "mask" not in sp:
            raise ValueError("padded batches need DeviceData(..., static=True)")
        s, mask = sp["days"][k], sp["mask"][k]
        x = self.x[s - self.T + 1:s + 1, sp["stock_padded"][k]] * mask[None, :, None]  # (T, P, C)
        return x.transpose(0, 1), sp["target_padded"][k], mask  # (P, T, C), (P,), (P,)


@torch.no_grad()
def predict(model, data: DeviceData, split: str, static: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """mu_pred, sigma_pred for every sample of ``split`` (flat, in the split's order);
    ``static``: through the padded days (the padding is dropped once, on the host)."""
    model.eval()
    mus, sigmas = [], []
    for k in range(len(data.splits[split]["days"])):
        if static:
            x, _, mask = data.padded(split, k)
            mu, sigma = model.predict(x, mask=mask)
        else:
            mu, sigma = model.predict(data.batch(split, k)[0])
        mus.append(mu)
        sigmas.append(sigma)
    mu, sigma = torch.cat(mus).cpu().numpy(), torch.cat(sigmas).cpu().numpy()
    if static:
        keep = data.splits[split]["mask"].reshape(-1).cpu().numpy()
        mu, sigma = mu[keep], sigma[keep]
    return mu, sigma


def _rng_states(rng, gen, device) -> dict:
    states = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(),
              "generator": gen.get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, rng, gen, device) -> None:
    rng.bit_generator.state = states["numpy"]
    torch.set_rng_state(states["torch"])
    gen.set_state(states["generator"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def _load_checkpoint(path, key: str) -> dict | None:
    """The state saved at ``path`` for the run ``key``; None (with a warning) if unusable."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: start again rather than fail
        warnings.warn(f"ignoring unreadable checkpoint {path} ({exc}); training from epoch 0")
        return None
    if state.get("key") != key:
        warnings.warn(f"ignoring checkpoint {path}: it belongs to another run or data set")
        return None
    return state


@torch.no_grad()
def mean_factor_kl(model, data: DeviceData, split: str) -> np.ndarray:
    """Each factor's KL(posterior || prior), averaged over the days of ``split``, (K,)."""
    model.eval()
    days = range(len(data.splits[split]["days"]))
    return torch.stack([model.factor_kl(*data.batch(split, k)) for k in days]).mean(0).cpu().numpy()


def optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, with the model's ``weight_decay`` attribute as its L2 term (Qlib's "reg")."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=getattr(model, "weight_decay", 0.0))


def train_step(model, opt, data: DeviceData, k: int, generator, grad_clip: float,
               static: bool = False) -> torch.Tensor:
    """One optimisation step on training day ``k``; (loss, nll, kl) left on the device.
    ``static``: the day padded to a fixed size, the padding masked (equal up to float
    rounding; tests/test_static.py)."""
    if static:
        x, y, mask = data.padded("train", k)
        loss, nll, kl = model.loss(x, y, generator=generator, mask=mask)
    else:
        x, y = data.batch("train", k)
        loss, nll, kl = model.loss(x, y, generator=generator)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip)
    opt.step()
    return torch.stack([loss.detach(), nll.detach(), kl.detach()])


def fit(model, ds: DayDataset, cfg: TrainConfig, device: torch.device,
        progress: bool | str = True, data: DeviceData | None = None, checkpoint=None,
        segment: dict | None = None, static: bool = False) -> dict:
    """Train ``model`` in place (best validation epoch restored); return the history.

    ``progress``: True, a progress bar; a string, no bar but one printed line per epoch
    that starts with it (several runs sharing one terminal or log); False, silence.
    ``checkpoint``: a file path; training resumes from it when it holds this run's
    state (same config and data fingerprint) and rewrites it after every epoch.
    ``segment``: what to record about this (possibly resumed) stretch of training, e.g.
    the git commit; the history returns one entry per stretch under ``segments``.
    ``static``: every day padded to one size with a mask (fixed shapes for the GPU);
    the same numbers up to float rounding.
    """
    if static and "mask" not in inspect.signature(model.loss).parameters:
        raise ValueError(f"static shapes are not implemented for {type(model).__name__} (its "
                         f"characteristics are ranked and normalised over the day's stocks); "
                         f"train it with static=False")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    data = data or DeviceData(ds, device, static=static)
    model.to(device)
    opt = optimizer(model, cfg)
    after_epoch = getattr(model, "after_epoch", None)  # e.g. CA's mean of the training factors
    valid = ds.splits["valid"]
    n_train = len(data.splits["train"]["days"])
    history, best, best_state, best_epoch, start, segments = [], -np.inf, None, -1, 0, []
    key = f"{cfg}|{ds.fingerprint}"
    state = _load_checkpoint(checkpoint, key)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
        best_state, start, segments = state["best_state"], len(history), state["segments"]
        _set_rng_states(state["rng"], rng, gen, device)
    segments = segments + [{"from_epoch": start, **(segment or {})}]
    epochs = tqdm(range(start, cfg.max_epochs), desc="epochs", disable=progress is not True,
                  initial=start, total=cfg.max_epochs)
    for epoch in epochs:
        if history and epoch - best_epoch > cfg.patience:  # early stopping (also ends a
            break  # resumed run whose checkpoint was written at its stopping epoch)
        t0 = time.perf_counter()
        model.train()
        total = torch.zeros(3, device=device)
        for k in rng.permutation(n_train):  # days shuffled each epoch
            total += train_step(model, opt, data, int(k), gen, cfg.grad_clip, static)
        train_loss, train_nll, train_kl = (total / n_train).tolist()  # one read per epoch
        if after_epoch is not None:
            after_epoch(data)
        train_s = time.perf_counter() - t0
        mu, _ = predict(model, data, "valid", static)
        ic = summarize(daily_rank_ic(mu, valid.label, valid.offsets))
        history.append({"epoch": epoch, "loss": train_loss, "nll": train_nll, "kl": train_kl,
                        "valid_rank_ic": ic["rank_ic"], "valid_rank_icir": ic["rank_icir"],
                        "train_seconds": round(train_s, 2),
                        "seconds": round(time.perf_counter() - t0, 2)})
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}")
        if ic["rank_ic"] > best:
            best, best_epoch = ic["rank_ic"], epoch
            best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            buf = io.BytesIO()
            torch.save({"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "best_state": best_state, "best": best, "best_epoch": best_epoch,
                        "history": history, "segments": segments, "rng": _rng_states(rng, gen, device)}, buf)
            write_atomic(checkpoint, buf.getvalue())
        epochs.set_postfix(loss=f"{train_loss:.4f}", valid_ic=f"{ic['rank_ic']:.4f}",
                           best=f"{best:.4f}@{best_epoch}")
        if isinstance(progress, str):
            # epochs counted from 0, as `epoch` and `best_epoch` in the result files
            print(f"{time.strftime('%H:%M:%S')} {progress} epoch {epoch} (of {cfg.max_epochs} at most): "
                  f"loss {train_loss:.4f}, valid Rank IC {ic['rank_ic']:.4f} (best {best:.4f} at "
                  f"epoch {best_epoch}), {history[-1]['seconds']:.0f} s", flush=True)
    model.load_state_dict(best_state)
    return {"history": history, "best_epoch": best_epoch, "epochs_trained": len(history),
            "valid_rank_ic": best, "segments": segments}
