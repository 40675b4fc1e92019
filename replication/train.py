"""Training and prediction: one trading day's cross-section per step, all on one device.

The normalised panel ``(D, S, C)`` and each split's index arrays are moved to the
device once; a day's batch is the gather ``X[s-T+1 : s+1, stocks]``. The loss is
accumulated on the device and read back once per epoch. Early stopping watches the
validation Rank IC of mu_pred and restores the best epoch's weights.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from replication.config import Overridable
from replication.data.dataset import DayDataset
from replication.metrics import daily_rank_ic, summarize


@dataclass(frozen=True)
class TrainConfig(Overridable):
    """Optimisation settings (the paper gives none)."""

    lr: float = 1e-3  # Adam learning rate; chosen on validation
    max_epochs: int = 100  # upper bound; early stopping ends runs well before
    patience: int = 10  # epochs without a better validation Rank IC before stopping
    grad_clip: float = 3.0  # gradient value clipping, as Qlib's benchmark models
    seed: int = 0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DeviceData:
    """The dataset's arrays on ``device``: the panel and each split's samples."""

    def __init__(self, ds: DayDataset, device: torch.device):
        self.T = ds.config.T
        self.x = torch.from_numpy(np.ascontiguousarray(ds.x)).to(device)  # (D, S, C)
        self.splits = {}
        for name, sp in ds.splits.items():
            self.splits[name] = {
                "days": sp.days.tolist(), "offsets": sp.offsets.tolist(),  # host ints: no sync
                "stock": torch.from_numpy(sp.stock).to(device),
                "target": torch.from_numpy(sp.target).to(device)}

    def batch(self, split: str, k: int):
        """Day k of ``split``: x (N, T, C) and the training target (N,)."""
        sp = self.splits[split]
        s, a, b = sp["days"][k], sp["offsets"][k], sp["offsets"][k + 1]
        x = self.x[s - self.T + 1:s + 1, sp["stock"][a:b]]  # (T, N, C)
        return x.transpose(0, 1), sp["target"][a:b]  # (N, T, C), (N,)


@torch.no_grad()
def predict(model, data: DeviceData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """mu_pred, sigma_pred for every sample of ``split`` (flat, in the split's order)."""
    model.eval()
    mus, sigmas = [], []
    for k in range(len(data.splits[split]["days"])):
        mu, sigma = model.predict(data.batch(split, k)[0])
        mus.append(mu)
        sigmas.append(sigma)
    return torch.cat(mus).cpu().numpy(), torch.cat(sigmas).cpu().numpy()


def fit(model, ds: DayDataset, cfg: TrainConfig, device: torch.device,
        progress: bool = True, data: DeviceData | None = None) -> dict:
    """Train ``model`` in place (best validation epoch restored); return the history."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    data = data or DeviceData(ds, device)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    valid = ds.splits["valid"]
    n_train = len(data.splits["train"]["days"])
    history, best, best_state, best_epoch = [], -np.inf, None, -1
    epochs = tqdm(range(cfg.max_epochs), desc="epochs", disable=not progress)
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        total = torch.zeros(3, device=device)
        for k in rng.permutation(n_train):  # days shuffled each epoch
            x, y = data.batch("train", int(k))
            loss, nll, kl = model.loss(x, y, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += torch.stack([loss.detach(), nll.detach(), kl.detach()])
        train_loss, train_nll, train_kl = (total / n_train).tolist()  # one read per epoch
        train_s = time.perf_counter() - t0
        mu, _ = predict(model, data, "valid")
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
        epochs.set_postfix(loss=f"{train_loss:.4f}", valid_ic=f"{ic['rank_ic']:.4f}",
                           best=f"{best:.4f}@{best_epoch}")
        if epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    return {"history": history, "best_epoch": best_epoch, "epochs_trained": len(history),
            "valid_rank_ic": best}
