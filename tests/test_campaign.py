"""The campaign: which cells run when, validation-only choices, parallel workers, resuming."""
from __future__ import annotations

import json
import os
import re

import replication.campaign as C
from replication import portfolio
from replication.data.dataset import DataConfig
from replication.synthetic import split

V0, V1 = {"variant": "ca0"}, {"variant": "ca1"}


def test_plan_runs_selection_first_then_the_chosen_setting():
    opts = {"ca": (V0, V1)}
    assert C.plan(["gru", "ca"], [0, 1], opts, {}) == [
        ("gru", 0, {}, 0), ("ca", 0, V0, 0), ("ca", 0, V1, 0), ("gru", 1, {}, 0)]
    assert C.plan(["gru", "ca"], [0, 1], opts, {"ca": V1}) == [
        ("gru", 0, {}, 0), ("ca", 0, V1, 0), ("gru", 1, {}, 0), ("ca", 1, V1, 0)]


def test_plan_of_table2_takes_the_settings_chosen_for_table1():
    opts = {"ca": (V0, V1)}
    assert C.plan(["gru", "ca"], [0], opts, {}, (50, 100)) == [  # CA's Table 1 selection first
        ("gru", 0, {}, 50), ("ca", 0, V0, 0), ("ca", 0, V1, 0), ("gru", 0, {}, 100)]
    assert C.plan(["ca"], [0, 1], opts, {"ca": V1}, (50, 100)) == [
        ("ca", 0, V1, 50), ("ca", 0, V1, 100), ("ca", 1, V1, 50), ("ca", 1, V1, 100)]


def test_cli_defaults_to_the_models_of_the_table_its_heldout_names(tmp_path, capsys):
    def listed(*args):
        assert C.main(["--dry-run", "--seeds", "0", "--out", str(tmp_path), *args]) == 0
        ids = [line for line in capsys.readouterr().out.splitlines() if "-seed0-" in line]
        return {i.split("-all")[0] for i in ids}

    assert listed() == set(C.TABLE1)
    assert listed("--heldout", "50") == set(C.TABLE2)  # FactorVAE-port instead of -prior
    assert listed("--heldout", "50", "--models", "gru") == {"gru"}


def test_campaign_on_two_workers_chooses_on_validation_and_resumes(synthetic_dir, tmp_path, monkeypatch,
                                                                   capfd):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))  # inherited by the workers
    kw = dict(models=["linear", "ca"], seeds=[0, 1], options={"ca": (V0, V1)},
              data=DataConfig.make(universe="csi300", **split()),
              train_cfg={"max_epochs": 1, "patience": 1}, provider=synthetic_dir, device="cpu",
              lanes=2, out=tmp_path / "runs", results=tmp_path / "results")
    assert len(C.campaign(**kw, dry_run=True)) == 4  # linear x 2 seeds + 2 selection runs
    trained = C.campaign(**kw)
    assert len(trained) == 5  # ... then CA seed 1 with the chosen depth
    printed, err = capfd.readouterr()
    for rid in trained:  # the workers print a line per epoch naming the run, and no bars
        assert re.search(rf"^\d\d:\d\d:\d\d {rid} epoch 0 \(of 1 at most\): loss \d\.\d{{4}}, valid Rank IC", printed, re.M)
    assert "epochs:" not in printed + err  # tqdm's bar
    results = [json.loads((tmp_path / "runs" / f"{rid}.json").read_text()) for rid in trained]
    selection = {r["config"]["model_config"]["variant"]: r["valid"]["rank_ic"]
                 for r in results if r["config"]["model"] == "ca" and r["config"]["seed"] == 0}
    seed1 = [r for r in results if r["config"]["model"] == "ca" and r["config"]["seed"] == 1]
    assert seed1[0]["config"]["model_config"]["variant"] == max(selection, key=selection.get)
    # each run's Table 3 cell was written as it ended, from its predictions
    backtests = {p.name for p in (tmp_path / "backtests").iterdir()}
    assert backtests == {f"{rid}-topk.json" for rid in trained}
    for rid in trained:
        (tmp_path / "results" / f"{rid}.npz").unlink()  # predictions gone (a session ends) ...
        r = json.loads((tmp_path / "runs" / f"{rid}.json").read_text())
        assert portfolio.cell(r, "topk", None, tmp_path / "results", tmp_path / "backtests")  # ... the cell stays
    assert C.campaign(**kw) == []  # everything exists: a rerun trains nothing


def test_workers_die_with_the_campaign(tmp_path):
    """A killed campaign leaves no worker training (its workers get SIGTERM)."""
    import signal
    import subprocess
    import sys
    import time

    pid_file, script = tmp_path / "worker.pid", tmp_path / "campaign.py"
    script.write_text(f"""
import multiprocessing as mp, os, time
from replication.campaign import _die_with_parent
def work(path):
    _die_with_parent()
    open(path, "w").write(str(os.getpid()))
    time.sleep(60)
if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=work, args=({str(pid_file)!r},))
    p.start()
    time.sleep(60)
""")
    parent = subprocess.Popen([sys.executable, str(script)])
    for _ in range(200):
        if pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the worker outlived its campaign")


def test_campaign_exits_without_leaking_its_workers_semaphores(synthetic_dir, tmp_path):
    """The pool is closed and joined, not terminated: a worker killed mid-exit left the
    'leaked semaphore objects' warning of Python's resource tracker on most runs."""
    import subprocess
    import sys

    script = tmp_path / "campaign.py"
    script.write_text(f"""
import replication.campaign as C
from replication.data.dataset import DataConfig
from replication.synthetic import split
if __name__ == "__main__":
    C.campaign(models=["linear"], seeds=[0, 1], data=DataConfig.make(universe="csi300", **split()),
               train_cfg={{"max_epochs": 1, "patience": 1}}, provider={str(synthetic_dir)!r},
               device="cpu", lanes=2, out={str(tmp_path / "runs")!r}, results={str(tmp_path / "results")!r})
""")
    env = {**os.environ, "REPLICATION_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert "leaked semaphore" not in done.stderr
