"""One run = one result file: contents, resumability, atomicity; FactorVAE learns the synthetic market."""
from __future__ import annotations

import json

import numpy as np
import pytest

import replication.run as R
from replication.data import load_market
from replication.data.dataset import DataConfig
from replication.synthetic import split


@pytest.fixture(scope="module")
def market(synthetic_dir):
    return load_market(synthetic_dir)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    return {"out": tmp_path / "runs", "results": tmp_path / "results"}


def _config(model="factorvae", epochs=2, seed=0):
    return R.run_config(model, seed, DataConfig.make(universe="csi300", **split()), {},
                        {"max_epochs": epochs, "patience": 2})


def test_run_writes_result_and_predictions_and_learns(market, dirs):
    cfg = _config()
    r = R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    path = dirs["out"] / f"{r['run_id']}.json"
    saved = json.loads(path.read_text())
    assert saved["config"] == cfg and saved["data_fingerprint"] and saved["git_commit"]
    assert saved["epochs_trained"] == 2 and saved["best_epoch"] in (0, 1)
    assert len(saved["test_daily_rank_ic"]["values"]) == saved["test"]["days"] > 100
    assert r["test"]["rank_ic"] > 0.02  # the synthetic market is predictable
    preds = np.load(dirs["results"] / f"{r['run_id']}.npz")
    assert {"date", "instrument", "mu", "sigma", "label"} <= set(preds.files)
    assert (preds["sigma"] > 0).all() and len(preds["mu"]) == len(preds["label"])
    assert (dirs["out"].parent / "predictions" / f"{r['run_id']}.npz").is_file()  # seed 0


def test_rerun_is_skipped_and_other_config_runs(market, dirs, monkeypatch):
    cfg = _config(epochs=1)
    first = R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    monkeypatch.setattr(R, "fit", lambda *a, **k: pytest.fail("a finished run was retrained"))
    assert R.execute(cfg, device="cpu", progress=False, market=market, **dirs) == first
    monkeypatch.undo()
    other = R.execute(_config(model="factorvae-prior", epochs=1, seed=1), device="cpu",
                      progress=False, market=market, **dirs)
    assert other["run_id"] != first["run_id"]
    assert not (dirs["out"].parent / "predictions" / f"{other['run_id']}.npz").exists()


def test_killed_run_leaves_no_result_and_a_rerun_completes(market, dirs, monkeypatch):
    cfg = _config(epochs=1)
    path = dirs["out"] / f"{R.run_id(cfg)}.json"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    assert not path.exists()
    monkeypatch.undo()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"config": ')  # a half-written file is not a finished run
    R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    assert json.loads(path.read_text())["config"] == cfg


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'factorvea'"):
        _config(model="factorvea")
