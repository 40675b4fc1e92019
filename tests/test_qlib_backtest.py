"""Optional: our TopK-Drop backtest against real Qlib's on the committed predictions.

Skipped unless ``pyqlib`` is importable (the project never imports it) and the real
data is present. The committed result of this comparison is
``data/qlib_backtest_crosscheck.json`` (``tests/crosscheck_backtest.py --out``).
"""
from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("qlib")
sys.path.insert(0, os.path.dirname(__file__))
import crosscheck_backtest as X  # noqa: E402


def test_same_daily_report_as_qlib(real_provider):
    s = X.run(str(real_provider))
    assert s["days_compared"] == s["days_ours"] == s["days_qlib"] > 400
    for column, diff in s["max_abs_diff"].items():
        assert diff < 1e-12, (column, diff)
    assert s["account_value_max_rel_diff"] < 1e-12
