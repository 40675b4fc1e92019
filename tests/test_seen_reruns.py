"""paper_tables/seen_reruns/ holds re-runs of Table 1 configs made only to record
``seen_heldout`` (Table 2's seen scores). ``table2_seen`` takes them for the Table 1
runs' own scores, which holds only if each re-run repeats its Table 1 run exactly: the
same config, epochs and scores, bit for bit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RERUNS = sorted((ROOT / "paper_tables" / "seen_reruns").glob("*.json"))


@pytest.mark.parametrize("path", RERUNS, ids=[p.stem for p in RERUNS])
def test_a_rerun_repeats_its_table1_run_bit_for_bit(path):
    rerun = json.loads(path.read_text())
    original = ROOT / "paper_tables" / "runs" / path.name
    assert original.is_file(), f"{path.name}: no Table 1 run of that id in paper_tables/runs/"
    table1 = json.loads(original.read_text())
    assert rerun["config"] == table1["config"]
    assert rerun["data_fingerprint"] == table1["data_fingerprint"]
    for key in ("valid", "test", "test_daily_rank_ic", "best_epoch", "epochs_trained"):
        assert rerun[key] == table1[key], key
    assert rerun["seen_heldout"], "a re-run exists to record seen_heldout"
