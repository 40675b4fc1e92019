"""One run = one result file: contents, resumability, atomicity; FactorVAE learns the synthetic market."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import replication.run as R
from replication.data import load_market
from replication.data.dataset import DataConfig, dataset
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
    assert saved["cpu"].endswith(f"torch kernels {torch.backends.cpu.get_cpu_capability()}")
    assert saved["epochs_trained"] == 2 and saved["best_epoch"] in (0, 1)
    assert len(saved["test_daily_rank_ic"]["values"]) == saved["test"]["days"] > 100
    assert r["test"]["rank_ic"] > 0.02  # the synthetic market is predictable
    preds = np.load(dirs["results"] / f"{r['run_id']}.npz")
    assert {"date", "instrument", "mu", "sigma", "label"} <= set(preds.files)
    assert (preds["sigma"] > 0).all() and len(preds["mu"]) == len(preds["label"])
    assert (dirs["out"].parent / "predictions" / f"{r['run_id']}.npz").is_file()  # seed 0
    kl = saved["valid_factor_kl"]
    assert len(kl) == 32 and min(kl) >= 0 and max(kl) > 0  # one KL per factor

    from replication.model import FactorVAE, ModelConfig
    from replication.train import DeviceData, predict
    model = FactorVAE(ModelConfig.make(**cfg["model_config"]))  # the saved best weights ...
    model.load_state_dict(torch.load(dirs["results"] / f"{r['run_id']}.pt", weights_only=True))
    ds = dataset(DataConfig.make(**cfg["data"]), market=market, progress=False)
    mu, _ = predict(model, DeviceData(ds, torch.device("cpu")), "test")
    np.testing.assert_array_equal(mu, preds["mu"])  # ... give the saved predictions


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


def test_predictions_of_both_splits_also_for_files_from_before_valid_was_kept(market, dirs):
    cfg = _config(epochs=1)
    rid = R.execute(cfg, device="cpu", progress=False, market=market, **dirs)["run_id"]
    valid, test = (R.predictions(cfg, s, dirs["results"]) for s in ("valid", "test"))
    assert len(valid["mu"]) > 0 and max(valid["date"]) < min(test["date"])
    path = dirs["results"] / f"{rid}.npz"
    old = {k: v for k, v in np.load(path).items() if not k.startswith("valid_")}
    path.write_bytes(R._npz(**old))  # a file as runs wrote it before
    again = R.predictions(cfg, "valid", dirs["results"], market=market)  # from the saved weights
    for k, v in valid.items():
        np.testing.assert_array_equal(again[k], v)
    assert "valid_mu" in np.load(path).files  # kept for next time
    path.write_bytes(R._npz(**old))
    (dirs["results"] / f"{rid}.pt").unlink()
    with pytest.raises(R.DataError, match="--retrain"):
        R.predictions(cfg, "valid", dirs["results"], market=market)
    path.unlink()
    with pytest.raises(R.DataError, match=f"{rid}.npz is missing"):
        R.predictions(cfg, "test", dirs["results"])


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


def _without_timing(result):
    drop = {"wall_seconds", "segments", "history"}
    return ({k: v for k, v in result.items() if k not in drop},
            [{k: v for k, v in h.items() if "seconds" not in k} for h in result["history"]])


def test_cut_off_run_resumes_from_its_checkpoint_with_identical_numbers(market, dirs, tmp_path,
                                                                        monkeypatch):
    import replication.train as TR

    cfg = R.run_config("factorvae", 3, DataConfig.make(universe="csi300", **split()), {},
                       {"max_epochs": 3, "patience": 5})
    whole = R.execute(cfg, device="cpu", progress=False, market=market,
                      out=tmp_path / "whole", results=tmp_path / "whole_results")
    assert not (tmp_path / "whole_results" / "checkpoints" / f"{whole['run_id']}.pt").exists()

    calls = []

    def cut_in_epoch_1(*args):  # the session ends during epoch 1's validation
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return summarize(*args)

    summarize = TR.summarize
    monkeypatch.setattr(TR, "summarize", cut_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    checkpoint = dirs["results"] / "checkpoints" / f"{whole['run_id']}.pt"
    assert checkpoint.is_file() and not (dirs["out"] / f"{whole['run_id']}.json").exists()
    monkeypatch.undo()
    resumed = R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    assert [s["from_epoch"] for s in resumed["segments"]] == [0, 1]
    assert _without_timing(resumed) == _without_timing(whole)  # bit-identical on the CPU
    a = np.load(dirs["results"] / f"{whole['run_id']}.npz")
    b = np.load(tmp_path / "whole_results" / f"{whole['run_id']}.npz")
    assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["sigma"], b["sigma"])
    assert not checkpoint.exists()  # a finished run leaves no checkpoint behind


def test_damaged_checkpoint_is_ignored_with_a_warning(market, dirs):
    cfg = _config(epochs=1)
    checkpoint = dirs["results"] / "checkpoints" / f"{R.run_id(cfg)}.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="ignoring unreadable checkpoint"):
        r = R.execute(cfg, device="cpu", progress=False, market=market, **dirs)
    assert r["epochs_trained"] == 1 and r["segments"][0]["from_epoch"] == 0


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'factorvea'"):
        _config(model="factorvea")


def test_predictions_up_to_day_s_ignore_data_after_s(market, scramble):
    """Same weights, market scrambled after a test day s: every prediction up to s is equal."""
    from replication.data.dataset import build, prepare
    from replication.model import FactorVAE, ModelConfig
    from replication.train import DeviceData, predict

    cfg = DataConfig.make(universe="all", **split())
    ds = build(prepare(market, cfg), cfg)
    s = int(ds.splits["test"].days[50])
    other = build(prepare(scramble(market, s), cfg), cfg)
    torch.manual_seed(0)
    model = FactorVAE(ModelConfig())
    mu_a, sigma_a = predict(model, DeviceData(ds, torch.device("cpu")), "test")
    mu_b, sigma_b = predict(model, DeviceData(other, torch.device("cpu")), "test")
    sp = ds.splits["test"]
    upto = sp.offsets[np.searchsorted(sp.days, s, side="right")]
    np.testing.assert_array_equal(mu_a[:upto], mu_b[:upto])
    np.testing.assert_array_equal(sigma_a[:upto], sigma_b[:upto])
    assert not np.array_equal(mu_a[upto:], mu_b[upto:])


def test_run_ids_of_committed_configs_do_not_drift():
    """Result files are found by run id (a hash of the config): adding models or
    options must not change the ids of the table's FactorVAE runs."""
    data = DataConfig(universe="csi300")
    assert R.run_id(R.run_config("factorvae", 0, data)) == "factorvae-csi300-seed0-989b3e8e"
    assert R.run_id(R.run_config("factorvae", 0, data, {"gamma": 1.0})) \
        == "factorvae-csi300-seed0-c3382364"  # gamma = 1, before gamma was chosen
    assert R.run_id(R.run_config("factorvae-prior", 0, data)) == "factorvae-prior-csi300-seed0-a307adbc"
    assert R.run_id(R.run_config("factorvae", 0, data, {"recon": "sample", "gamma": 1.0}, {"lr": 1e-3})) \
        == "factorvae-csi300-seed0-60fa0ca7"  # a selection run of paper_tables/selection


def test_cli_rejects_a_hyper_parameter_the_model_lacks(capsys):
    assert R.main(["--model", "gru", "--recon", "sample"]) == 2
    assert "unknown GRUConfig keys ['recon']" in capsys.readouterr().err
    assert R.main(["--model", "ca", "--set", "variant=ca9"]) == 2
    assert "unknown CA variant 'ca9'" in capsys.readouterr().err


def test_flushing_subnormals_is_opt_in_and_recorded_in_the_result(market, dirs, monkeypatch):
    from replication.files import FLUSH_ENV, flush_subnormals

    tiny = torch.tensor([1e-39])  # a float32 subnormal
    monkeypatch.delenv(FLUSH_ENV, raising=False)
    assert not flush_subnormals() and tiny.mul(1.0).item() != 0.0  # default: kept
    monkeypatch.setenv(FLUSH_ENV, "yes")
    with pytest.raises(ValueError, match=FLUSH_ENV):
        flush_subnormals()
    monkeypatch.setenv(FLUSH_ENV, "1")
    try:
        r = R.execute(_config(epochs=1, seed=2), device="cpu", progress=False, market=market, **dirs)
        assert tiny.mul(1.0).item() == 0.0  # the run turned flushing on ...
        assert r["cpu"].endswith("; subnormals flushed to zero")  # ... and says so,
        assert r["segments"][0]["cpu"] == r["cpu"]  # for each stretch of a resumed run
    finally:
        torch.set_flush_denormal(False)  # process-wide: leave the other tests unaffected
    assert tiny.mul(1.0).item() != 0.0
