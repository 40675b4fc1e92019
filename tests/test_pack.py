"""The market pack: bit-exact round trip, restriction to a date range, corruption caught."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replication.data.pack import read_pack, write_pack
from replication.data.provider import FIELDS, DataError, Market, read_instruments, read_provider

D, S = 300, 30


def _f32_bits(*values) -> np.ndarray:
    return np.array(values, dtype=np.uint32).view(np.float32)


def _hand_built_market(seed: int = 0) -> Market:
    """Prices as raw cents x a float64 factor (rounded to float32 in ``factor``), like
    ``cn_data``, plus everything that could break a codec."""
    rng = np.random.default_rng(seed)
    cal = np.busday_offset("2019-11-01", np.arange(D), roll="forward").astype("datetime64[D]")
    codes = np.array(sorted({f"SH{600000 + i:06d}" for i in range(S - 1)} | {"SH000300"}))
    first = rng.integers(0, 40, S)
    last = D - 1 - rng.integers(0, 40, S)
    first[3], last[3] = 120, 200  # listed late, delisted early
    first[4], last[4] = 0, 5  # gone before the packed range starts
    first[5], last[5] = 297, 299  # listed after the packed range ends
    f = {k: np.full((D, S), np.nan, dtype=np.float32) for k in FIELDS}
    for j in range(S):
        a, b = first[j], last[j] + 1
        n = b - a
        cents = np.maximum(100, 1500 + np.cumsum(rng.integers(-40, 41, n)))
        scale = np.full(n, rng.uniform(1, 30))
        for t in rng.integers(1, n, 3):  # ex-dividend days: the factor steps up
            scale[t:] *= rng.uniform(1.001, 1.2)
        o = cents + rng.integers(-20, 21, n)
        h = np.maximum(o, cents) + rng.integers(0, 30, n)
        lo = np.maximum(1, np.minimum(o, cents) - rng.integers(0, 30, n))
        vol = (rng.integers(100, 10**8, n) / scale).astype(np.float32)
        susp = rng.random(n) < 0.05  # suspended: previous close, volume 0
        susp[0] = False
        for t in np.flatnonzero(susp):
            cents[t] = o[t] = h[t] = lo[t] = cents[t - 1]
        vol[susp] = 0
        for k, c in (("open", o), ("high", h), ("low", lo), ("close", cents)):
            f[k][a:b, j] = ((c / 100.0) * scale).astype(np.float32)
        f["volume"][a:b, j] = vol
        f["factor"][a:b, j] = scale.astype(np.float32)
        close = f["close"][a:b, j].astype(np.float64)
        chg = np.r_[rng.normal(0, 5), 100 * (close[1:] / close[:-1] - 1)]
        half = n // 2  # 4 decimals, then 6 (as cn_data before / during 2016-2019)
        f["change"][a:b, j] = np.r_[np.round(chg[:half], 4), np.round(chg[half:], 6)]
    j = int(np.flatnonzero(codes == "SH000300")[0])  # an index: no cents, huge volume
    a, b = first[j], last[j] + 1
    level = 3500 * np.exp(np.cumsum(rng.normal(0, 0.01, b - a)))
    for k, x in (("open", 0.998), ("high", 1.01), ("low", 0.99), ("close", 1.0)):
        f[k][a:b, j] = np.round(level * x, 3)
    f["factor"][a:b, j] = 1
    f["volume"][a:b, j] = rng.uniform(1e9, 1e11, b - a)
    c = 10  # NaN, odd NaN payloads and odd values inside stored ranges
    f["close"][first[c] + 7, c] = np.nan
    f["open"][first[c] + 8, c] = np.nan
    f["volume"][first[c] + 9: first[c] + 12, c] = np.nan
    f["change"][first[c] + 9, c] = np.nan
    f["factor"][first[c] + 20: first[c] + 25, c] = np.nan
    f["high"][first[c] + 30, c] = _f32_bits(0xFFC00000)[0]  # negative quiet NaN
    f["low"][first[c] + 31, c] = _f32_bits(0x7F800001)[0]  # signalling NaN
    f["close"][first[c] + 32, c] = np.inf
    f["open"][first[c] + 33, c] = -3.0e38
    f["volume"][first[c] + 34, c] = _f32_bits(1)[0]  # smallest subnormal
    f["change"][first[c] + 35, c] = 1.0e30
    f["low"][first[c] + 36, c] = -0.0
    spell = lambda i, k: (cal[i], cal[k])  # noqa: E731
    markets = {
        "all": {c: [spell(first[i], last[i])] for i, c in enumerate(codes)},
        "csi300": {codes[1]: [spell(0, 50), spell(80, 120), spell(200, 299)],  # several spells
                   codes[2]: [spell(295, 299)],  # starts after the packed range
                   codes[4]: [spell(0, 5)],  # its stock has no day in the range
                   codes[6]: [spell(10, 299)]},
    }
    return Market(calendar=cal, codes=codes, fields=f, first=first.astype(np.int64),
                  last=last.astype(np.int64), markets=markets, source="hand-built")


def assert_same_market(got: Market, want: Market) -> None:
    np.testing.assert_array_equal(got.calendar, want.calendar)
    assert got.calendar.dtype == want.calendar.dtype
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_array_equal(got.first, want.first)
    np.testing.assert_array_equal(got.last, want.last)
    assert got.markets == want.markets
    assert list(got.fields) == list(want.fields)
    for k, x in want.fields.items():
        y = got.fields[k]
        assert y.dtype == np.float32 and y.shape == x.shape, k
        bad = np.flatnonzero(y.view(np.uint32) != x.view(np.uint32))
        assert bad.size == 0, f"{k}: {bad.size} values differ, first at flat index {bad[:5]}"
    # the documented contract for change is 1e-5 percent; the codec is in fact exact
    c, d = got.fields["change"], want.fields["change"]
    np.testing.assert_array_equal(np.isnan(c), np.isnan(d))
    assert np.nanmax(np.abs(c.astype(np.float64) - d)) <= 1e-5
    assert got.fingerprint() == want.fingerprint()


def test_round_trip_hand_built(tmp_path):
    m = _hand_built_market()
    path = tmp_path / "market.pack"
    start, end = str(m.calendar[10]), str(m.calendar[289])
    stats = write_pack(m, path, start=start, end=end)
    assert stats["total"] == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["market.pack"]  # no temporary left
    got = read_pack(path)
    want = m.between(start, end)
    assert got.source == str(path)
    assert_same_market(got, want)
    assert stats["codes"] == len(want.codes) == S - 2 and stats["days"] == 280
    assert "SH600003" not in got.codes and "SH600004" not in got.codes
    assert got.markets["csi300"] == {
        m.codes[1]: [(m.calendar[0], m.calendar[50]), (m.calendar[80], m.calendar[120]),
                     (m.calendar[200], m.calendar[289])],
        m.codes[6]: [(m.calendar[10], m.calendar[289])]}
    j = got.column("SH600002")
    assert (got.first[j], got.last[j]) == (110, 190)


def test_range_from_calendar_start(tmp_path):
    m = _hand_built_market(seed=1)
    path = tmp_path / "m.pack"
    write_pack(m, path, start=str(m.calendar[0]), end=str(m.calendar[250]))
    assert_same_market(read_pack(path), m.between(None, m.calendar[250]))


def test_values_outside_the_stored_range_are_refused(tmp_path):
    m = _hand_built_market()
    m.fields["volume"][m.first[7] - 1, 7] = 1.0
    with pytest.raises(DataError, match="outside"):
        write_pack(m, tmp_path / "m.pack", start=str(m.calendar[0]), end=str(m.calendar[-1]))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    m = _hand_built_market()
    path = tmp_path_factory.mktemp("pack") / "m.pack"
    write_pack(m, path, start=str(m.calendar[0]), end=str(m.calendar[-1]))
    return path, path.read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "cut_prefix", "flip_payload", "flip_header",
                                    "magic", "version", "empty"])
def test_corrupt_pack_raises(tmp_path, packed, damage):
    raw = bytearray(packed[1])
    if damage == "truncate":
        raw = raw[:-100]
    elif damage == "cut_prefix":
        raw = raw[:30]
    elif damage == "flip_payload":
        raw[-500] ^= 0x01
    elif damage == "flip_header":
        raw[70] ^= 0x80
    elif damage == "magic":
        raw[:8] = b"NOTAPACK"
    elif damage == "version":
        raw[8] += 1
    else:
        raw = b""
    path = tmp_path / "bad.pack"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        read_pack(path)
    assert str(path) in str(err.value)
    assert "python -m replication.data pack --out FILE" in str(err.value)


def test_missing_pack_raises(tmp_path):
    path = tmp_path / "nope.pack"
    with pytest.raises(DataError, match="nope.pack"):
        read_pack(path)


def test_round_trip_real_data(tmp_path, real_provider):
    """~150 real instruments: indices, CSI300 members, others (bit-exact, seconds)."""
    markets = read_instruments(real_provider)
    csi = sorted(markets["csi300"])
    others = sorted(set(markets["all"]) - set(csi))
    codes = ["SH000300", "SH000905", "SZ399300", "SH600000"] + csi[::12] + others[::40]
    m = read_provider(real_provider, codes=codes)
    assert 140 <= len(m.codes) <= 170
    path = tmp_path / "real.pack"
    stats = write_pack(m, path)
    got = read_pack(path)
    assert_same_market(got, m.between("2010-01-04", "2021-01-31"))
    assert got.calendar[0] == np.datetime64("2010-01-04")
    assert got.calendar[-1] == np.datetime64("2021-01-29")
    # the whole market (~3979 codes) packs to ~43 MB: keep per-cell cost in check
    assert stats["total"] / stats["cells"] < 7


def test_features_from_pack_equal_features_from_directory(real_provider, tmp_path):
    from replication.data import alpha158, load_market

    path = tmp_path / "csi300.pack"
    write_pack(load_market(real_provider, instruments="csi300"), path,
               start="2018-01-02", end="2019-06-28")
    span = dict(instruments="csi300", start="2018-05-02", end="2019-06-25")  # 60+ days of history
    from_dir, from_pack = alpha158(real_provider, **span), alpha158(path, **span)
    assert len(from_dir) > 50_000
    pd.testing.assert_frame_equal(from_pack, from_dir)


def test_dataset_from_pack_equals_dataset_from_directory(synthetic_dir, tmp_path, monkeypatch):
    from replication.data import load_market
    from replication.data.dataset import DataConfig, dataset
    from replication.synthetic import split

    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "synthetic.pack"
    m = load_market(synthetic_dir)
    write_pack(m, path, start=str(m.calendar[0]), end=str(m.calendar[-1]))
    cfg = DataConfig.make(universe="csi300", **split())
    a = dataset(cfg, provider=synthetic_dir, progress=False)
    b = dataset(cfg, provider=path, progress=False)
    assert a.fingerprint == b.fingerprint
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 1  # b came from a's cache
    np.testing.assert_array_equal(a.x, b.x)
