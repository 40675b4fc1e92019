"""Static shapes (issue 6): a day padded to a fixed size with a mask gives the same
losses, gradients and predictions as the unpadded day, whatever the padded rows hold."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from replication import run
from replication.data import load_market
from replication.data.dataset import DataConfig, dataset
from replication.synthetic import split
from replication.train import DeviceData, TrainConfig, fit, predict

MASKED = ["factorvae", "factorvae-prior", "factorvae-port", "gru", "alstm", "trans", "sfm", "gat"]


@pytest.fixture(scope="module")
def ds(synthetic_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLICATION_CACHE", str(tmp_path_factory.mktemp("cache")))
    out = dataset(DataConfig.make(universe="csi300", **split()), market=load_market(synthetic_dir),
                  progress=False)
    mp.undo()
    return out


def _model(name: str):
    torch.manual_seed(0)
    spec = run.MODELS[name]
    small = {"trans": {"d_model": 16}}.get(name, {})  # keeps the test fast; same code path
    return spec.build(spec.config.make(**spec.fixed, **small)).eval()  # eval: no dropout draws


def _grads(model, *args, **kwargs):
    model.zero_grad()
    loss = model.loss(*args, **kwargs)[0]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", MASKED)
def test_padding_with_any_junk_changes_nothing(ds, name):
    # float64: FactorVAE-port's (e^T e)^{-1} is ill-conditioned on the synthetic days
    # (N ~ H), which would magnify float32 rounding; the masking is what is tested
    x, _, y, _ = ds.day("train", 5)
    x, y = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    n, pad = len(y), 37
    g = torch.Generator().manual_seed(1)
    x_pad = torch.cat([x, 5 * torch.randn((pad, *x.shape[1:]), generator=g, dtype=x.dtype)])  # junk
    y_pad = torch.cat([y, torch.randn(pad, generator=g, dtype=y.dtype)])
    mask = torch.arange(n + pad) < n
    model = _model(name).double()
    loss, grads = _grads(model, x, y)
    loss_p, grads_p = _grads(model, x_pad, y_pad, mask=mask)
    assert torch.isfinite(loss_p) and loss_p == pytest.approx(float(loss), rel=1e-9)
    assert len(grads) == len(grads_p)
    for a, b in zip(grads, grads_p):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-9)
    with torch.no_grad():
        mu, _ = model.predict(x)
        mu_p, _ = model.predict(x_pad, mask=mask)
    torch.testing.assert_close(mu_p[:n], mu, rtol=1e-9, atol=1e-12)


def test_padded_days_hold_the_days(ds):
    data, plain = DeviceData(ds, torch.device("cpu"), static=True), DeviceData(ds, torch.device("cpu"))
    sizes = np.concatenate([np.diff(sp.offsets) for sp in ds.splits.values()])
    assert data.size == sizes.max()
    for split_name in ("train", "test"):
        x, y, mask = data.padded(split_name, 3)
        x0, y0 = plain.batch(split_name, 3)
        n = len(x0)
        assert x.shape == (data.size, *x0.shape[1:]) and int(mask.sum()) == n and mask[:n].all()
        torch.testing.assert_close(x[:n], x0)
        assert (x[n:] == 0).all() and (y[n:] == 0).all()
    with pytest.raises(ValueError, match="static=True"):
        plain.padded("train", 0)


def test_static_training_follows_the_unpadded_run(ds):
    """Two epochs of FactorVAE (float32, no dropout): the same run up to rounding drift."""
    cfg = TrainConfig.make(max_epochs=2)
    histories, preds = [], []
    for static in (False, True):
        model = _model("factorvae").train()
        h = fit(model, ds, cfg, torch.device("cpu"), progress=False, static=static)
        histories.append(h["history"])
        preds.append(predict(model, DeviceData(ds, torch.device("cpu")), "test")[0])
    for a, b in zip(*histories):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["valid_rank_ic"] == pytest.approx(a["valid_rank_ic"], abs=1e-3)
    # float32 rounding differs (other matrix sizes) and drifts over ~700 Adam steps
    assert np.abs(preds[1] - preds[0]).max() < 5e-3 and np.corrcoef(preds)[0, 1] > 0.999


def test_models_without_masks_are_refused(ds):
    with pytest.raises(ValueError, match="static shapes are not implemented for CA"):
        fit(_model("ca"), ds, TrainConfig.make(max_epochs=1), torch.device("cpu"), progress=False,
            static=True)
