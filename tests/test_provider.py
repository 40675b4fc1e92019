"""The Qlib provider reader: layout, fallbacks and one clear error per kind of bad input."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from replication.data import DataError, alpha158, load_market, read_provider, resolve_provider


@pytest.fixture
def provider(synthetic_dir, tmp_path):
    """A private copy of the synthetic provider directory, free to corrupt."""
    dst = tmp_path / "cn_data"
    shutil.copytree(synthetic_dir, dst)
    return dst


def test_reads_layout(provider):
    m = read_provider(provider)
    cal = (provider / "calendars" / "day.txt").read_text().split()
    assert list(m.calendar.astype(str)) == cal
    code = m.codes[5]
    raw = np.fromfile(provider / "features" / code.lower() / "close.day.bin", dtype="<f4")
    start = int(raw[0])
    assert m.first[5] == start and m.last[5] == start + len(raw) - 2
    np.testing.assert_array_equal(m.fields["close"][start:start + len(raw) - 1, 5], raw[1:])
    assert np.isnan(m.fields["close"][:start, 5]).all()
    assert m.fields["close"].dtype == np.float32


def test_several_membership_spells(provider):
    (provider / "instruments" / "toy.txt").write_text(
        "SH600000\t2016-01-04\t2016-01-08\nSH600000\t2016-02-01\t2016-02-05\n")
    m = read_provider(provider)
    member = m.membership("toy")[:, m.column("SH600000")]
    days = m.calendar[member].astype(str)
    assert len(days) == 10 and days[0] == "2016-01-04" and days[-1] == "2016-02-05"
    assert "2016-01-11" not in days


def test_upper_case_folder_fallback(provider):
    (provider / "features" / "sh600000").rename(provider / "features" / "SH600000")
    m = read_provider(provider, codes=["SH600000"])
    assert np.isfinite(m.fields["close"]).any()


def test_missing_feature_folder_is_skipped_with_a_count(provider):
    shutil.rmtree(provider / "features" / "sh600000")
    shutil.rmtree(provider / "features" / "sz000001")
    with pytest.warns(UserWarning, match=r"^2 instruments .* no feature folder"):
        m = read_provider(provider)
    assert "SH600000" not in m.codes and len(m.codes) > 100


def test_location_parameter_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("QLIB_DATA", str(tmp_path / "env"))
    assert resolve_provider(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_provider() == tmp_path / "env"
    monkeypatch.delenv("QLIB_DATA")
    assert str(resolve_provider()).endswith(".qlib/qlib_data/cn_data")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"nowhere does not exist.*QLIB_DATA"):
        read_provider(tmp_path / "nowhere")


def test_missing_calendar(provider):
    (provider / "calendars" / "day.txt").unlink()
    with pytest.raises(DataError, match=r"calendars/day.txt is missing"):
        read_provider(provider)


def test_bin_size_not_multiple_of_4(provider):
    path = provider / "features" / "sh600000" / "close.day.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"sh600000/close.day.bin: size \d+ bytes is not"):
        read_provider(provider)


@pytest.mark.parametrize("start", [-1.0, 1e6, np.nan, 2.5])
def test_bin_start_outside_calendar(provider, start):
    path = provider / "features" / "sh600000" / "open.day.bin"
    a = np.fromfile(path, dtype="<f4")
    a[0] = start
    a.tofile(path)
    with pytest.raises(DataError, match=r"sh600000/open.day.bin: start index"):
        read_provider(provider)


def test_missing_required_field(provider):
    (provider / "features" / "sh600000" / "factor.day.bin").unlink()
    with pytest.raises(DataError, match=r"required field file .*sh600000/factor.day.bin is missing"):
        read_provider(provider)


def test_unknown_market(provider):
    with pytest.raises(DataError, match=r"unknown market 'csi500'.*available: \['all', 'csi300'\]"):
        alpha158(provider, instruments="csi500")
    with pytest.raises(DataError, match=r"unknown market 'csi500'"):
        load_market(provider).membership("csi500")


def test_empty_date_range(provider):
    with pytest.raises(DataError, match=r"empty date range"):
        alpha158(provider, instruments=["SH600000"], start="2030-01-01", end="2030-02-01")
    with pytest.raises(DataError, match=r"empty date range"):
        alpha158(provider, instruments=["SH600000"], start="2016-03-01", end="2016-02-01")


def test_empty_instrument_list(provider):
    with pytest.raises(DataError, match=r"empty instrument list"):
        alpha158(provider, instruments=[])


def test_unknown_instrument_code(provider):
    with pytest.raises(DataError, match=r"'SH699999' has no data"):
        load_market(provider).column("SH699999")


def test_real_data_reads_cleanly(real_provider):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = read_provider(real_provider, codes=["SH600000", "SH000300", "SZ000001"])
    assert str(m.calendar[0]) == "2010-01-04" and len(m.calendar) == 2792
    assert np.isfinite(m.fields["close"]).all(axis=0).all()  # these three trade throughout


def test_fingerprint_is_hashed_once_and_follows_the_content(provider, scramble):
    m = read_provider(provider)
    fp = m.fingerprint()
    assert m.fingerprint() == fp == read_provider(provider).fingerprint()
    changed = scramble(m, len(m.calendar) // 2)  # dataclasses.replace: a new Market
    assert changed.fingerprint() != fp
    assert m.between(None, m.calendar[-2]).fingerprint() != fp
