"""The README's result tables repeat the committed tables (paper_tables/table1.csv,
table2.csv and table3.csv) cell for cell: a figure in the README that no table (and so no run file)
backs, or a stale one, fails here."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tables(text: str) -> list[list[dict]]:
    """Every markdown table of the README's ``text`` as a list of {header: cell} rows."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            header, body = block[0], [r for r in block[1:] if not set("".join(r)) <= set("-: ")]
            out.append([dict(zip(header, r)) for r in body])
            block = []
    return out


def _norm(cell: str) -> str:
    """'0.041 (0.001)' and '0.041(0.001)', '−1.36%' and '-1.36%', '–' and '' are the same."""
    cell = cell.replace("−", "-").replace(" ", "")
    return "" if cell in ("–", "-") else cell


def _seeds(cell: str) -> str:
    """'0–3' -> '0,1,2,3'; '0, 1' -> '0,1'; Table 2's per-m lists, '–' for an m without runs:
    '0–4 / 0, 1 / –' -> '0,1,2,3,4/0,1/-'."""
    if "/" in cell:
        return "/".join(_seeds(part) for part in cell.split("/"))
    m = re.fullmatch(r"(\d+)\s*[–-]\s*(\d+)", cell.strip())
    return ",".join(map(str, range(int(m[1]), int(m[2]) + 1))) if m else _norm(cell) or "-"


def _method(name: str) -> str:
    return name.split(" (γ")[0].strip()  # "FactorVAE (γ = 0.1)" is Table 1's "FactorVAE"


# README column -> committed table's column
COLUMNS = {
    "table1": {"our Rank IC": "Rank IC", "our Rank ICIR": "Rank ICIR",
               "paper Rank IC": "paper Rank IC", "paper Rank ICIR": "paper Rank ICIR"},
    "table3": {"our AR": "AR", "our SR": "SR", "our MDD": "MDD",
               "paper AR": "paper AR", "paper SR": "paper SR", "paper MDD": "paper MDD"},
    # Table 2: the README's columns carry the committed table's names ("m=50 Rank IC", ...)
    "table2": {f"m={m} {k}": f"m={m} {k}" for m in (50, 100, 200)
               for k in ("Rank IC", "Rank ICIR", "paper Rank IC", "paper Rank ICIR")},
}


def _readme_tables(which: str) -> list[list[dict]]:
    key = next(iter(COLUMNS[which]))  # a column only that table's README rows have
    return [t for t in _tables((ROOT / "README.md").read_text()) if t and key in t[0]]


@pytest.mark.parametrize("which", ["table1", "table2", "table3"])
def test_readme_results_equal_the_committed_tables(which):
    committed = pd.read_csv(ROOT / "paper_tables" / f"{which}.csv", dtype=str,
                            keep_default_na=False).set_index("Method").to_dict("index")
    shown = _readme_tables(which)
    assert shown, f"the README shows no {which} results"
    for table in shown:
        for row in table:
            name = _method(row.get("model") or row["method"])
            assert name in committed, f"README row {name!r} is not in paper_tables/{which}.csv"
            ours = committed[name]
            seeds = next(c for c in ours if c.startswith("seeds"))  # Table 2's: "seeds (m=50/100/200)"
            # rows without a seeds column are the complete ones (Tables 1 and 3)
            assert _seeds(row.get(seeds, "0–4")) == _seeds(ours[seeds]), name
            cols = {r: c for r, c in COLUMNS[which].items()  # Table 2: the m shown
                    if r in row or which != "table2"}
            assert cols, f"README {which} row {name!r} shows none of {list(COLUMNS[which])}"
            for readme_col, col in cols.items():
                assert _norm(row[readme_col]) == _norm(ours[col]), (name, readme_col)


def test_the_check_tells_a_changed_figure_apart():
    good = "| method | seeds | our AR |\n|---|---|---|\n| GRU | 0–3 | 7.63% (4.25%) |\n"
    row = _tables(good)[0][0]
    assert _norm(row["our AR"]) == _norm("7.63%(4.25%)") and _seeds(row["seeds"]) == "0,1,2,3"
    assert _norm(row["our AR"].replace("7.63", "7.64")) != _norm("7.63%(4.25%)")
    assert _seeds("0, 1") == "0,1" and _norm("−0.19 (0.16)") == "-0.19(0.16)" and _norm("–") == ""
    assert _seeds("0–4 / 0, 1 / -") == _seeds("0,1,2,3,4 / 0,1 / -") == "0,1,2,3,4/0,1/-"


def test_readme_paired_comparison_equals_the_committed_table():
    """Table 2 seed by seed (FactorVAE minus each method): rows keyed by (m, method)."""
    committed = pd.read_csv(ROOT / "paper_tables" / "table2_paired.csv", dtype=str, keep_default_na=False)
    committed = {(r["m"], r["Method"]): r for r in committed.to_dict("records")}
    shown = [t for t in _tables((ROOT / "README.md").read_text()) if t and "FactorVAE - Method" in t[0]]
    assert shown, "the README shows no table2_paired rows"
    for table in shown:
        assert {(r["m"], r["Method"]) for r in table} == set(committed), "README's paired rows differ"
        for row in table:
            ours = committed[(row["m"], row["Method"])]
            for col, cell in row.items():
                assert _norm(cell) == _norm(ours[col]), (row["m"], row["Method"], col)
