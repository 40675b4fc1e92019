import pytest

from replication import tables


def _result(model, seed, ic, icir):
    return {"config": {"model": model, "seed": seed, "data": {"universe": "csi300", "test": ["a", "b"]},
                       "train": {"max_epochs": 5, "lr": 1e-4}, "model_config": {"variant": "ca1"}},
            "test": {"rank_ic": ic, "rank_icir": icir}, "epochs_trained": 4, "best_epoch": 1,
            "wall_seconds": 60, "run_id": f"{model}-{seed}", "device": "CPU", "data_fingerprint": "f",
            "data_range": ["x", "y"], "git_commit": "c"}


def test_table1_mean_std_over_seeds_beside_the_paper(tmp_path):
    rs = [_result("factorvae", 0, 0.05, 0.5), _result("factorvae", 1, 0.07, 0.7),
          _result("factorvae-prior", 0, 0.04, 0.4)]
    df = tables.table1(rs)
    assert list(df["Method"]) == ["FactorVAE-prior", "FactorVAE"]  # the paper's order
    more = tables.table1(rs + [_result("ca", 0, 0.03, 0.3), _result("gru", 0, 0.02, 0.2)])
    assert list(more["Method"]) == ["GRU", "CA (CA1)", "FactorVAE-prior", "FactorVAE"]
    assert more.set_index("Method").loc["CA (CA1)", "paper Rank IC"] == "0.039(0.002)"
    assert more.set_index("Method").loc["GRU", "Rank IC"] == "0.020(one seed)"  # no std of one
    fv = df.set_index("Method").loc["FactorVAE"]
    assert fv["Rank IC"] == "0.060(0.014)" and fv["Rank ICIR"] == "0.600(0.141)"
    assert fv["paper Rank IC"] == "0.055(0.004)" and fv["paper Rank ICIR"] == "0.568(0.044)"
    tables.write_table(df, tables.provenance(rs), tmp_path, "table1", "T1")
    md = (tmp_path / "table1.md").read_text()
    assert "universe: ['csi300']" in md and "| FactorVAE | 0,1 | 0.060(0.014)" in md


def test_best_on_validation_ignores_test():
    a, b = _result("ca", 0, 0.09, 1.0), _result("ca", 0, 0.01, 1.0)
    a["valid"], b["valid"] = {"rank_ic": 0.02}, {"rank_ic": 0.03}
    assert tables.best_on_validation([a, b]) is b
    with pytest.raises(ValueError):
        tables.best_on_validation([])


def test_selection_orders_by_validation_only(tmp_path):
    import json

    for i, (v, t) in enumerate([(0.05, 0.09), (0.06, 0.01)]):
        r = _result("factorvae", 0, t, 1.0)
        r["config"].update(model_config={"recon": ["analytic", "sample"][i]})
        r["config"]["train"]["lr"] = 1e-3
        r["valid"] = {"rank_ic": v, "rank_icir": 0.4}
        r["run_id"] = f"run{i}"
        (tmp_path / f"run{i}.json").write_text(json.dumps(r))
    other = tmp_path / "runs"
    other.mkdir()
    for model, seed in (("factorvae", 0), ("factorvae", 1), ("factorvae-prior", 0)):
        r = _result(model, seed, 0.5, 1.0)
        r["config"].update(model_config={"recon": "analytic"})
        r["config"]["train"]["lr"] = 1e-4
        r["valid"] = {"rank_ic": 0.055, "rank_icir": 0.4}
        (other / f"{model}{seed}.json").write_text(json.dumps(r))
    df = tables.selection(tmp_path, other)
    assert list(df["recon"]) == ["sample", "analytic", "analytic"]  # best validation first
    assert list(df["lr"]) == [1e-3, 1e-4, 1e-3]  # only FactorVAE seed 0 from runs/
    assert "test" not in " ".join(df.columns).lower()
    with pytest.raises(FileNotFoundError, match="no factorvae seed-0 result files"):
        tables.selection(tmp_path / "empty")
