"""The throughput benchmark on the synthetic market: its figures hang together, the
epochs per run come from the committed runs, the projection counts the tables' runs."""
from __future__ import annotations

import json

import pytest

import replication.bench as B
from replication.data.dataset import DataConfig
from replication.synthetic import split


def test_bench_writes_consistent_figures(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    runs.mkdir()
    for i, epochs in enumerate((10, 20, 40)):
        (runs / f"gru-{i}.json").write_text(json.dumps(
            {"config": {"model": "gru", "data": {"universe": "csi300"}}, "epochs_trained": epochs}))
    r = B.bench(["factorvae", "gru"], DataConfig.make(universe="csi300", **split()), "cpu",
                synthetic_dir, steps=3, warmup=1, repeats=2, out=tmp_path / "bench", runs_dir=runs)
    assert r["device"].startswith("CPU") and r["train_days"] > 100 and r["git_commit"]
    fv, gru = r["rows"]
    assert gru["epochs_per_run"] == 20 and "3 gru runs" in gru["epochs_source"]
    assert fv["epochs_per_run"] == 20 and "all 3" in fv["epochs_source"]  # no factorvae run
    for row in r["rows"]:
        assert row["step_ms"] > 0 and row["valid_day_ms"] > 0
        epoch = (r["train_days"] * row["step_ms"] + r["valid_days"] * row["valid_day_ms"]) / 1e3
        assert row["epoch_seconds"] == pytest.approx(epoch, rel=0.02, abs=0.1)
    saved = json.loads((tmp_path / "bench" / "cpu-csi300.json").read_text())
    assert saved["rows"] == r["rows"]
    md = (tmp_path / "bench" / "cpu-csi300.md").read_text()
    assert "Training throughput" in md and f"({saved['cpu']})" in md and "torch kernels" in saved["cpu"]


def test_projection_counts_the_runs_of_tables_1_and_2():
    rows = [{"model": "factorvae", "run_seconds": 100.0}, {"model": "factorvae-prior", "run_seconds": 50.0},
            {"model": "gru", "run_seconds": 10.0}]
    p = B.project(rows)
    assert p["table1_seconds"] == 5 * 160  # 5 seeds of three models
    # Table 2: FactorVAE and GRU, plus FactorVAE-port at FactorVAE's time; no -prior
    assert p["table2_seconds"] == 3 * 5 * (100 + 10 + 100)
    assert p["total_seconds"] == p["table1_seconds"] + p["table2_seconds"]


def test_report_puts_qlibs_gru_epoch_beside_ours(tmp_path):
    rows = [{"model": "gru", "step_ms": 40.0, "valid_day_ms": 10.0, "epoch_seconds": 95.0,
             "epochs_per_run": 40, "epochs_source": "x", "run_seconds": 3800.0}]
    r = {"device": "CPU (1 threads)", "universe": "csi300", "stocks_per_day_median": 237,
         "train_days": 1925, "valid_days": 243, "repeats": 3, "steps": 30, "git_commit": "abc",
         "torch": "2", "date": "d", "cpu_count": 2, "load_average_at_start": 0.1,
         "rows": rows, "projection": B.project(rows)}
    qlib = {"pyqlib": "0.9.7", "device": "CPU (1 threads)", "dataloader_workers": 0,
            "load_average_at_start": 2.3, "date": "d", "train_batches": 637, "batch_size": 800,
            "train_samples": 510323, "seconds": {"epoch": 204.2, "train_epoch": 191.9, "valid_epoch": 12.3,
                                                 "train_loader_alone": 68.1, "handler_and_dataset": 52.6}}
    with pytest.raises(B.DataError, match="no benchmark .*cpu-csi300.json"):
        B.write_report(tmp_path, "cpu", "csi300")
    (tmp_path / "cpu-csi300.json").write_text(json.dumps(r))
    assert "Qlib's own GRU" not in B.write_report(tmp_path, "cpu", "csi300")
    (tmp_path / "qlib-gru-cpu-csi300.json").write_text(json.dumps(qlib))
    text = B.write_report(tmp_path, "cpu", "csi300")
    assert "one epoch takes 204 s" in text and "our GRU's epoch above: 95 s" in text
    assert (tmp_path / "cpu-csi300.md").read_text() == text
