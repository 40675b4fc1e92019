"""Assemble the paper's tables from result files (computing stays in ``replication.run``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# The paper's Table 1: mean (std) over 5 seeds, test 2019-2020, all A-shares (the paper's).
PAPER_TABLE1 = {
    "GRU": (0.032, 0.002, 0.398, 0.031), "ALSTM": (0.031, 0.004, 0.360, 0.019),
    "GAT": (0.034, 0.002, 0.390, 0.032), "Trans": (0.033, 0.003, 0.417, 0.032),
    "SFM": (0.037, 0.001, 0.456, 0.004), "Linear": (0.022, 0.002, 0.333, 0.033),
    "CA": (0.039, 0.002, 0.442, 0.036), "FactorVAE-prior": (0.042, 0.003, 0.384, 0.033),
    "FactorVAE": (0.055, 0.004, 0.568, 0.044),
}
# The paper's Table 2: Rank IC and Rank ICIR over the m stocks removed from training,
# mean (std) over 5 seeds: {method: {m: (IC, IC std, ICIR, ICIR std)}}.
PAPER_TABLE2 = {
    "GRU": {50: (0.031, 0.005, 0.184, 0.029), 100: (0.030, 0.004, 0.234, 0.030), 200: (0.031, 0.004, 0.282, 0.032)},
    "ALSTM": {50: (0.027, 0.004, 0.162, 0.022), 100: (0.028, 0.007, 0.210, 0.045), 200: (0.026, 0.005, 0.237, 0.041)},
    "GAT": {50: (0.029, 0.008, 0.166, 0.043), 100: (0.023, 0.011, 0.176, 0.085), 200: (0.025, 0.009, 0.215, 0.071)},
    "Trans": {50: (0.034, 0.007, 0.201, 0.040), 100: (0.034, 0.006, 0.259, 0.043), 200: (0.033, 0.003, 0.302, 0.023)},
    "SFM": {50: (0.037, 0.007, 0.220, 0.042), 100: (0.038, 0.004, 0.294, 0.035), 200: (0.038, 0.003, 0.342, 0.036)},
    "Linear": {50: (0.018, 0.005, 0.138, 0.075), 100: (0.018, 0.005, 0.147, 0.044), 200: (0.018, 0.004, 0.176, 0.042)},
    "CA": {50: (0.038, 0.008, 0.215, 0.046), 100: (0.039, 0.004, 0.284, 0.034), 200: (0.039, 0.003, 0.328, 0.027)},
    "FactorVAE-port": {50: (0.043, 0.005, 0.241, 0.022), 100: (0.039, 0.003, 0.272, 0.005), 200: (0.041, 0.004, 0.328, 0.011)},
    "FactorVAE": {50: (0.053, 0.007, 0.299, 0.039), 100: (0.056, 0.002, 0.384, 0.044), 200: (0.050, 0.008, 0.399, 0.063)},
}
DISPLAY = {"gru": "GRU", "alstm": "ALSTM", "gat": "GAT", "trans": "Trans", "sfm": "SFM",
           "linear": "Linear", "ca": "CA", "factorvae": "FactorVAE",
           "factorvae-prior": "FactorVAE-prior", "factorvae-port": "FactorVAE-port"}


# The paper's Table 3: TopK-Drop (k=50, n=5) on CSI300 members, excess return over the
# CSI300 index with cost, 2019-2020: AR (%), SR, MDD (%). No FactorVAE-prior row.
PAPER_TABLE3 = {
    "GRU": (2.28, 0.31, 9.08), "ALSTM": (2.20, 0.27, 12.19), "GAT": (4.49, 0.56, 7.20),
    "Trans": (4.79, 0.62, 5.01), "SFM": (3.33, 0.42, 7.32), "Linear": (0.01, 0.02, 8.02),
    "CA": (3.62, 0.47, 7.00), "FactorVAE": (15.32, 1.92, 4.47),
    "FactorVAE(TDrisk)": (16.32, 2.09, 4.50),
}


def best_on_validation(results: list[dict]) -> dict:
    """The result with the highest validation Rank IC (the only selection rule used)."""
    if not results:
        raise ValueError("no results to choose from")
    return max(results, key=lambda r: r["valid"]["rank_ic"])


def _mean_std(values, fmt: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    v = np.asarray(values, dtype=float) * scale
    mean = f"{v.mean():{fmt}}{unit}"
    return f"{mean}({v.std(ddof=1):{fmt}}{unit})" if len(v) > 1 else f"{mean}(one seed)"


def _paper_order(df: pd.DataFrame, order) -> pd.DataFrame:
    """Rows in the order of the paper's table (``order``: its method names); others last."""
    rank = {n: i for i, n in enumerate(order)}
    key = lambda s: s.str.split(" (", regex=False).str[0].map(rank).fillna(len(rank))  # noqa: E731
    return df.sort_values("Method", key=key, kind="stable").reset_index(drop=True)


def _paper1(p: tuple | None) -> dict:
    """Table 1's paper cells ("" where the paper has no such row)."""
    return {"paper Rank IC": f"{p[0]:.3f}({p[1]:.3f})" if p else "",
            "paper Rank ICIR": f"{p[2]:.3f}({p[3]:.3f})" if p else ""}


def _paper3(p: tuple | None) -> dict:
    """Table 3's paper cells ("" where the paper has no such row, e.g. FactorVAE-prior)."""
    return {"paper AR": f"{p[0]:.2f}%" if p else "", "paper SR": f"{p[1]:.2f}" if p else "",
            "paper MDD": f"{p[2]:.2f}%" if p else ""}


def _paper2(p: dict | None, ms) -> dict:
    """Table 2's paper cells for each m of ``ms`` ("" where the paper has none)."""
    cells = {}
    for m in ms:
        v = (p or {}).get(m)
        cells[f"m={m} paper Rank IC"] = f"{v[0]:.3f}({v[1]:.3f})" if v else ""
        cells[f"m={m} paper Rank ICIR"] = f"{v[2]:.3f}({v[3]:.3f})" if v else ""
    return cells


def _every_paper_row(rows: list[dict], paper: dict, cells, order, seeds: str = "seeds") -> pd.DataFrame:
    """``rows`` plus a "none yet" row (the paper's ``cells`` only; ``seeds``: the column
    that says so) for each of the paper's methods that has none, in the paper's
    ``order``; empty cells are ""."""
    have = {r["Method"].split(" (")[0] for r in rows}
    rows = rows + [{"Method": name, seeds: "none yet", **cells(values)}
                   for name, values in paper.items() if name not in have]
    return _paper_order(pd.DataFrame(rows).fillna(""), order)


def table1(results: list[dict]) -> pd.DataFrame:
    """Rows = models in the paper's order; ours as mean(std) over seeds beside the paper's.
    Every row of the paper's table appears: one without runs says "none yet"."""
    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(r["config"]["model"], []).append(r)
    rows = []
    for model, rs in by_model.items():
        paper = PAPER_TABLE1.get(DISPLAY.get(model, model))
        rows.append({
            "Method": _method(model, _variants(rs)),
            "seeds": ",".join(str(r["config"]["seed"]) for r in rs),
            "Rank IC": _mean_std([r["test"]["rank_ic"] for r in rs]),
            "Rank ICIR": _mean_std([r["test"]["rank_icir"] for r in rs]),
            **_paper1(paper),
            "lr": ", ".join(f"{v:g}" for v in sorted({r["config"]["train"]["lr"] for r in rs})),
            "epochs (best)": ", ".join(f"{r['epochs_trained']}({r['best_epoch']})" for r in rs),
            "minutes/run": f"{np.mean([r['wall_seconds'] for r in rs]) / 60:.1f}",
        })
    return _every_paper_row(rows, PAPER_TABLE1, _paper1, PAPER_TABLE1)


def _method(model: str, variants) -> str:
    """The row name: the paper's, plus CA's chosen depth (the runs' ``variants``)."""
    return DISPLAY.get(model, model) + (f" ({', '.join(sorted(set(variants))).upper()})" if model == "ca" else "")


def _variants(results: list[dict]) -> list[str]:
    return [r["config"]["model_config"].get("variant", "") for r in results]


def table2(results: list[dict]) -> pd.DataFrame:
    """Rows = methods in the paper's order; per m (columns in increasing m), Rank IC and
    Rank ICIR over the held-out stocks, mean(std) over seeds, the paper's beside. Every
    row of the paper's table appears: one without runs says "none yet"."""
    by_model: dict[str, list[dict]] = {}
    for r in results:
        if not r.get("heldout"):
            raise ValueError(f"{r['run_id']} is not a Table 2 run (it held no stock out)")
        by_model.setdefault(r["config"]["model"], []).append(r)
    ms = sorted({r["heldout"]["m"] for r in results})
    seeds_col = f"seeds (m={'/'.join(map(str, ms))})"
    rows = []
    for model, rs in by_model.items():
        row = {"Method": _method(model, _variants(rs))}
        cells = {m: [r for r in rs if r["heldout"]["m"] == m] for m in ms}
        row[seeds_col] = " / ".join(",".join(str(r["config"]["seed"]) for r in cells[m]) or "-" for m in ms)
        for m in ms:
            scores = [r["heldout"]["test"] for r in cells[m]]
            row[f"m={m} Rank IC"] = _mean_std([c["rank_ic"] for c in scores]) if scores else ""
            row[f"m={m} Rank ICIR"] = _mean_std([c["rank_icir"] for c in scores]) if scores else ""
        rows.append(row | _paper2(PAPER_TABLE2.get(DISPLAY.get(model, model)), ms))
    df = _every_paper_row(rows, PAPER_TABLE2, lambda p: _paper2(p, ms), PAPER_TABLE2, seeds_col)
    return df[["Method", seeds_col] + [f"m={m} {k}" for m in ms
                                       for k in ("Rank IC", "Rank ICIR", "paper Rank IC", "paper Rank ICIR")]]


def table2_seen(pairs: list[dict]) -> pd.DataFrame:
    """Per method and m (the paper's row order, m increasing): the Rank IC over the held-out
    stocks from the Table 2 runs (``unseen``), over the same stocks from the Table 1 runs
    of the same model, seed and settings (``seen``: they trained on them), and the paired
    difference, mean(std) over seeds. ``pairs``: one {model, m, seed, unseen, seen} a seed,
    and the run's ``variant`` where it has one (CA's depth, shown as in Table 2)."""
    df = pd.DataFrame(pairs)
    rows = []
    for (model, m), g in df.groupby(["model", "m"], sort=True):
        rows.append({"Method": _method(model, g["variant"].dropna() if "variant" in g else []), "m": m,
                     "seeds": ",".join(map(str, g["seed"])),
                     "unseen Rank IC (Table 2 run)": _mean_std(g["unseen"]),
                     "seen Rank IC (Table 1 run)": _mean_std(g["seen"]),
                     "unseen - seen": _mean_std(g["unseen"] - g["seen"])})
    return _paper_order(pd.DataFrame(rows), PAPER_TABLE2)


def table2_paired(results: list[dict]) -> pd.DataFrame:
    """The paper's reading of Table 2 (FactorVAE more robust than every other method, and
    than FactorVAE-port) seed by seed: per m, and per other method with runs on some of
    FactorVAE's seeds there (the paper's row order), FactorVAE minus that method on the
    seeds both have. Seed s of every method holds out the same stocks, so the paired
    difference removes how hard the set is, which varies between seeds more than the
    methods differ; ``paired t`` is its mean over its standard error (blank for one seed or no spread)."""
    ic = pd.DataFrame([{"model": r["config"]["model"], "m": r["heldout"]["m"], "seed": r["config"]["seed"],
                        "variant": r["config"]["model_config"].get("variant", ""),
                        "ic": r["heldout"]["test"]["rank_ic"]} for r in results])
    rows = []
    for m, g in ic.groupby("m", sort=True):
        fv = g[g.model == "factorvae"].set_index("seed")["ic"]
        for model, h in g[g.model != "factorvae"].groupby("model"):
            other = h.set_index("seed")["ic"]
            seeds = sorted(set(fv.index) & set(other.index))
            if not seeds:
                continue
            d = fv[seeds] - other[seeds]
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            rows.append({"m": m, "Method": _method(model, h["variant"]), "seeds": ",".join(map(str, seeds)),
                         "FactorVAE Rank IC": f"{fv[seeds].mean():.3f}", "Method Rank IC": f"{other[seeds].mean():.3f}",
                         "FactorVAE - Method": _mean_std(d), "paired t": f"{d.mean() / se:.2f}" if se > 0 else "",
                         "FactorVAE ahead": f"{int((d > 0).sum())} of {len(d)}"})
    cols = ["m", "Method", "seeds", "FactorVAE Rank IC", "Method Rank IC", "FactorVAE - Method",
            "paired t", "FactorVAE ahead"]
    return _paper_order(pd.DataFrame(rows, columns=cols), PAPER_TABLE2).sort_values("m", kind="stable",
                                                                                   ignore_index=True)


def table3(cells: list[dict]) -> pd.DataFrame:
    """Rows = methods (FactorVAE(TDrisk) after FactorVAE); ours as mean(std) over seeds of
    the excess return with cost (AR %, SR, MDD % as a positive loss), the paper's beside,
    then the same AR without cost and the absolute AR (net of cost). Every row of the
    paper's table appears: one without backtests says "none yet"."""
    groups: dict[str, list[dict]] = {}
    for c in cells:
        name = DISPLAY.get(c["model"], c["model"]) + ("(TDrisk)" if c["strategy"] == "tdrisk" else "")
        groups.setdefault(name, []).append(c)
    pct = dict(fmt=".2f", scale=100, unit="%")
    rows = []
    for name, cs in groups.items():
        m = lambda series, key: [c["metrics"][series][key] for c in cs]  # noqa: E731
        paper = PAPER_TABLE3.get(name)
        rows.append({
            "Method": name, "seeds": ",".join(str(c["seed"]) for c in cs),
            "AR": _mean_std(m("excess_with_cost", "annualized_return"), **pct),
            "SR": _mean_std(m("excess_with_cost", "information_ratio"), ".2f"),
            "MDD": _mean_std(-np.array(m("excess_with_cost", "max_drawdown")), **pct),
            **_paper3(paper),
            "AR without cost": _mean_std(m("excess_without_cost", "annualized_return"), **pct),
            "absolute AR": _mean_std(m("absolute", "annualized_return"), **pct),
            "eta (validation)": ", ".join(f"{c['eta']:g}" for c in cs) if cs[0]["eta"] is not None else "",
        })
    return _every_paper_row(rows, PAPER_TABLE3, _paper3, [*PAPER_TABLE1, "FactorVAE(TDrisk)"])


def commits(result: dict) -> list[str]:
    """The git commits a run trained under: one, or several when it resumed under newer
    code (run.py writes them comma-joined, oldest first)."""
    return result["git_commit"].split(",")


def provenance(results: list[dict]) -> dict:
    """What the table's header states: universe, device, data, commits, epochs."""
    first = results[0]
    return {
        "universe": sorted({r["config"]["data"]["universe"] for r in results}),
        **({"heldout m": sorted({r["heldout"]["m"] for r in results if r.get("heldout")})}
           if first.get("heldout") else {}),
        "device": sorted({r["device"] for r in results}),
        "max_epochs": sorted({r["config"]["train"]["max_epochs"] for r in results}),
        "data_fingerprint": sorted({r["data_fingerprint"] for r in results}),
        "data_range": first["data_range"], "test": first["config"]["data"]["test"],
        "git_commits": sorted({c for r in results for c in commits(r)}),
        "runs": [r["run_id"] for r in results],
    }


def write_table(df: pd.DataFrame, prov: dict, out, name: str, title: str,
                note: str = "Ours: mean(std) over seeds; paper: as printed in the paper "
                            "(all A-shares, 2019-2020 test).") -> None:
    """``out/<name>.csv`` and ``out/<name>.md`` (a header with the provenance)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{name}.csv", index=False)
    lines = [f"# {title}", "", note, ""]
    lines += [f"- {k}: {v}" for k, v in prov.items() if k != "runs"]
    lines += [f"- result files: {', '.join(prov['runs'])}", ""]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n" + markdown(df))


def markdown(df: pd.DataFrame) -> str:
    rows = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(rows) + "\n"


def selection(*folders, model: str = "factorvae", seed: int = 0) -> pd.DataFrame:
    """The validation-set choice of ``recon``, ``lr`` and ``gamma``: one row per result file of
    ``model`` and ``seed`` in ``folders`` (the selection runs, and the table's own run
    with the chosen settings), best validation Rank IC first; Table 2's runs (stocks held
    out) took no part in the choice and are left out. No test metric is shown."""
    rows = []
    for path in sorted(p for folder in folders for p in Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        if r["config"]["model"] != model or r["config"]["seed"] != seed or r["config"].get("heldout"):
            continue
        rows.append({"run": r["run_id"], "model": r["config"]["model"],
                     "universe": r["config"]["data"]["universe"], "seed": r["config"]["seed"],
                     "recon": r["config"]["model_config"]["recon"], "lr": r["config"]["train"]["lr"],
                     "gamma": r["config"]["model_config"]["gamma"],
                     "valid Rank IC": round(r["valid"]["rank_ic"], 4),
                     "valid Rank ICIR": round(r["valid"]["rank_icir"], 3),
                     "epochs (best)": f"{r['epochs_trained']}({r['best_epoch']})",
                     "device": r["device"], "minutes": round(r["wall_seconds"] / 60, 1),
                     "commit": ",".join(c[:10] for c in commits(r)), "folder": path.parent.name})
    if not rows:
        raise FileNotFoundError(f"no {model} seed-{seed} result files in {', '.join(map(str, folders))}")
    return pd.DataFrame(rows).sort_values("valid Rank IC", ascending=False).reset_index(drop=True)


SELECTION_README = """# Validation-set selection of FactorVAE's recon switch, learning rate and KL weight

Seed 0, universe CSI300. Coordinate search: `recon` (analytic | sample) at lr 1e-3,
then lr (1e-3 | 1e-4) with the better recon, then (after the posterior collapse seen at
gamma = 1, README "Decisions") gamma of eq. (17) by decades with the chosen recon and
lr: 0.1, and 0.01 because 0.1 beat 1 on validation; the search ends at 0.01 (decided
before that run ended, whatever its result). Chosen: the best
validation Rank IC of each step; the overall first row is Table 1's seed-0 run, which
`folder` says where it lives. Test metrics are in the result files but played no
part in the choice.

"""

if __name__ == "__main__":  # python -m replication.tables selection OUT_FOLDER [MORE_FOLDERS]
    import sys

    df = selection(*sys.argv[2:])
    text = SELECTION_README + markdown(df)
    (Path(sys.argv[2]) / "README.md").write_text(text)
    print(text)
