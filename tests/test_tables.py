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
    paper_rows = ["GRU", "ALSTM", "GAT", "Trans", "SFM", "Linear", "CA"]
    assert list(df["Method"]) == paper_rows + ["FactorVAE-prior", "FactorVAE"]  # the paper's order
    gru = df.set_index("Method").loc["GRU"]  # a row not run yet: the paper's values only
    assert gru["seeds"] == "none yet" and gru["Rank IC"] == "" and gru["paper Rank IC"] == "0.032(0.002)"
    more = tables.table1(rs + [_result("ca", 0, 0.03, 0.3), _result("gru", 0, 0.02, 0.2)])
    assert list(more["Method"]) == ["GRU", "ALSTM", "GAT", "Trans", "SFM", "Linear", "CA (CA1)",
                                    "FactorVAE-prior", "FactorVAE"]
    assert (more["seeds"] == "none yet").sum() == 5
    assert more.set_index("Method").loc["CA (CA1)", "paper Rank IC"] == "0.039(0.002)"
    assert more.set_index("Method").loc["GRU", "Rank IC"] == "0.020(one seed)"  # no std of one
    fv = df.set_index("Method").loc["FactorVAE"]
    assert fv["Rank IC"] == "0.060(0.014)" and fv["Rank ICIR"] == "0.600(0.141)"
    assert fv["paper Rank IC"] == "0.055(0.004)" and fv["paper Rank ICIR"] == "0.568(0.044)"
    rs[1]["git_commit"] = "d,c"  # resumed under a newer commit: each commit listed once
    assert tables.provenance(rs)["git_commits"] == ["c", "d"]
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
        r["config"].update(model_config={"recon": ["analytic", "sample"][i], "gamma": 1.0})
        r["config"]["train"]["lr"] = 1e-3
        r["valid"] = {"rank_ic": v, "rank_icir": 0.4}
        r["run_id"] = f"run{i}"
        (tmp_path / f"run{i}.json").write_text(json.dumps(r))
    other = tmp_path / "runs"
    other.mkdir()
    for model, seed, m in (("factorvae", 0, 0), ("factorvae", 1, 0), ("factorvae-prior", 0, 0),
                           ("factorvae", 0, 50)):  # the last: a Table 2 run, no part of the choice
        r = _result(model, seed, 0.5, 1.0)
        r["config"]["heldout"] = m
        r["config"].update(model_config={"recon": "analytic", "gamma": 1.0})
        r["config"]["train"]["lr"] = 1e-4
        r["valid"] = {"rank_ic": 0.055, "rank_icir": 0.4}
        r["git_commit"] = "0123456789ab,ba9876543210"  # resumed under a newer commit
        (other / f"{model}{seed}m{m}.json").write_text(json.dumps(r))
    df = tables.selection(tmp_path, other)
    assert df.loc[df["lr"] == 1e-4, "commit"].item() == "0123456789,ba98765432"  # both commits
    assert list(df["recon"]) == ["sample", "analytic", "analytic"]  # best validation first
    assert list(df["lr"]) == [1e-3, 1e-4, 1e-3]  # only FactorVAE seed 0 from runs/
    assert "test" not in " ".join(df.columns).lower()
    with pytest.raises(FileNotFoundError, match="no factorvae seed-0 result files"):
        tables.selection(tmp_path / "empty")


def test_table2_columns_per_m_over_the_heldout_stocks_beside_the_paper():
    def r2(model, seed, m, ic, icir):
        r = _result(model, seed, 0.9, 9.0)  # the whole-universe test numbers: not Table 2's
        r["heldout"] = {"m": m, "test": {"rank_ic": ic, "rank_icir": icir}}
        return r

    rs = [r2("factorvae", 0, 50, 0.04, 0.2), r2("factorvae", 1, 50, 0.06, 0.4),
          r2("factorvae", 0, 200, 0.05, 0.3), r2("factorvae-port", 0, 50, 0.03, 0.1)]
    df = tables.table2(rs).set_index("Method")
    paper_rows = ["GRU", "ALSTM", "GAT", "Trans", "SFM", "Linear", "CA", "FactorVAE-port", "FactorVAE"]
    assert list(df.index) == paper_rows  # every row of the paper's table, in its order
    gat = df.loc["GAT"]  # no runs yet: the paper's cells of the m present only
    assert gat["seeds (m=50/200)"] == "none yet" and gat["m=50 Rank IC"] == ""
    assert gat["m=50 paper Rank IC"] == "0.029(0.008)" and gat["m=200 paper Rank ICIR"] == "0.215(0.071)"
    assert list(df.columns[:6]) == ["seeds (m=50/200)", "m=50 Rank IC", "m=50 Rank ICIR",
                                    "m=50 paper Rank IC", "m=50 paper Rank ICIR", "m=200 Rank IC"]
    fv = df.loc["FactorVAE"]
    assert fv["m=50 Rank IC"] == "0.050(0.014)" and fv["m=50 Rank ICIR"] == "0.300(0.141)"
    assert fv["m=200 Rank IC"] == "0.050(one seed)" and fv["seeds (m=50/200)"] == "0,1 / 0"
    assert fv["m=50 paper Rank IC"] == "0.053(0.007)" and fv["m=200 paper Rank ICIR"] == "0.399(0.063)"
    assert df.loc["FactorVAE-port", "m=200 Rank IC"] == "" and "m=100 Rank IC" not in df.columns
    assert tables.provenance(rs)["heldout m"] == [50, 200]
    mixed = tables.provenance(rs + [_result("factorvae", 0, 0.05, 0.5)])  # with its Table 1 run
    assert mixed["heldout m"] == [50, 200] and mixed["runs"][-1] == "factorvae-0"
    with pytest.raises(ValueError, match="not a Table 2 run"):
        tables.table2([_result("gru", 0, 0.1, 0.1)])


def test_table2_seen_pairs_each_seed_with_its_table1_run():
    pairs = [{"model": "factorvae", "m": 50, "seed": 0, "unseen": 0.03, "seen": 0.05},
             {"model": "factorvae", "m": 50, "seed": 1, "unseen": 0.05, "seen": 0.05},
             {"model": "linear", "m": 100, "seed": 0, "unseen": 0.02, "seen": 0.01},
             {"model": "linear", "m": 50, "seed": 0, "unseen": 0.01, "seen": 0.02}]
    df = tables.table2_seen(pairs)
    ca = tables.table2_seen([{"model": "ca", "m": 50, "seed": 0, "variant": "ca3", "unseen": 0.0, "seen": 0.0}])
    assert ca["Method"].tolist() == ["CA (CA3)"]  # named as in Table 2
    assert [(r.Method, r.m) for r in df.itertuples()] == [("Linear", 50), ("Linear", 100), ("FactorVAE", 50)]
    fv = df.iloc[2]
    assert fv["seeds"] == "0,1" and fv["unseen Rank IC (Table 2 run)"] == "0.040(0.014)"
    assert fv["seen Rank IC (Table 1 run)"] == "0.050(0.000)" and fv["unseen - seen"] == "-0.010(0.014)"
    assert df.iloc[1]["unseen - seen"] == "0.010(one seed)"


def test_table2_paired_compares_factorvae_seed_by_seed_on_the_seeds_both_have():
    def r2(model, seed, m, ic):
        r = _result(model, seed, 0.9, 9.0)
        r["config"]["model_config"] = {"variant": "ca3"} if model == "ca" else {}
        r["heldout"] = {"m": m, "test": {"rank_ic": ic, "rank_icir": 1.0}}
        return r

    rs = [r2("factorvae", 0, 50, 0.04), r2("factorvae", 1, 50, 0.06), r2("factorvae", 2, 50, 0.05),
          r2("gru", 0, 50, 0.03), r2("gru", 1, 50, 0.09), r2("gru", 3, 50, 0.9),  # seed 3: no FactorVAE
          r2("ca", 2, 50, 0.01), r2("factorvae-port", 0, 200, 0.02), r2("factorvae", 0, 200, 0.03),
          r2("linear", 4, 200, 0.5)]  # no seed in common: no row
    df = tables.table2_paired(rs)
    assert [(r.m, r.Method) for r in df.itertuples()] == [(50, "GRU"), (50, "CA (CA3)"), (200, "FactorVAE-port")]
    gru = df.iloc[0]
    assert gru["seeds"] == "0,1" and gru["FactorVAE Rank IC"] == "0.050" and gru["Method Rank IC"] == "0.060"
    # differences +0.01 and -0.03: mean -0.01, std 0.028, standard error 0.02
    assert gru["FactorVAE - Method"] == "-0.010(0.028)" and gru["paired t"] == "-0.50"
    assert gru["FactorVAE ahead"] == "1 of 2"
    ca = df.iloc[1]
    assert ca["FactorVAE - Method"] == "0.040(one seed)" and ca["paired t"] == "" and ca["FactorVAE ahead"] == "1 of 1"
    rs[1]["heldout"]["test"]["rank_ic"] = 0.11  # differences +0.01 and +0.02
    moved = tables.table2_paired(rs).iloc[0]
    assert moved["FactorVAE - Method"] == "0.015(0.007)" and moved["paired t"] == "3.00"
    assert moved["FactorVAE ahead"] == "2 of 2"
    assert tables.table2_paired([r2("gru", 0, 50, 0.1)]).empty
