"""Shared fixtures: the real Qlib data (../shared/data/cn_data) and the synthetic market.

Tests on the real data skip when it is absent, except under ``REQUIRE_REAL_DATA=1``
(set by ``.ci/run``), where its absence is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("REPLICATION_REAL_DATA", ROOT.parent / "shared" / "data" / "cn_data"))


@pytest.fixture(scope="session")
def real_provider() -> Path:
    if not (REAL_DATA / "calendars" / "day.txt").is_file():
        msg = (f"real Qlib data not found at {REAL_DATA} (set REPLICATION_REAL_DATA to its "
               f"provider directory)")
        if os.environ.get("REQUIRE_REAL_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return REAL_DATA


@pytest.fixture(scope="session")
def real_market(real_provider):
    """The whole real market in memory (a few seconds, loaded once per session)."""
    from replication.data import load_market

    return load_market(real_provider)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """The default synthetic market (200 stocks x 600 days, seed 0) as a provider directory."""
    from replication.synthetic import write_market

    return write_market(tmp_path_factory.mktemp("synthetic") / "market")


def scramble_after(market, s: int, seed: int = 0):
    """``market`` with every field value after day index ``s`` multiplied by a random
    factor in [0.5, 1.5): the look-ahead tests compare predictions up to s on both."""
    import dataclasses

    import numpy as np

    rng = np.random.default_rng(seed)
    fields = {k: np.where(np.arange(len(v))[:, None] > s,
                          v * rng.uniform(0.5, 1.5, v.shape).astype(np.float32), v)
              for k, v in market.fields.items()}
    return dataclasses.replace(market, fields=fields, _col={})


@pytest.fixture(scope="session")
def scramble():
    """:func:`scramble_after`, for the look-ahead tests of every model family."""
    return scramble_after
