"""One compact file holding a :class:`Market`, bit-exact (for hosts without the data).

The ``cn_data`` panel is ~330 MB of float32; even its stored cells as float32 + lzma
take ~100 MB, over the 55 MB budget. So each field becomes small integers that lzma
squeezes well:

* Only each stock's stored range ``first .. last`` is written, stock after stock
  (*cells*), and integers that follow each other in time are delta-coded.
* ``factor``: float32 bits, delta-coded (almost always 0: it changes on ex-dividend days).
* Prices are ``raw cents x F`` with ``F`` the adjustment factor in float64; the float32
  ``factor`` is ``F`` rounded, which breaks the ``cents -> price`` mapping for ~26% of
  the values. So for each run of constant ``factor`` (a *segment*) the file stores the
  float64 ``F`` that reproduces every price of the run (the intersection of the
  intervals each price allows), and prices become integer cents: close delta-coded,
  ``open - prev close``, ``high - max(open, close)``, ``min(open, close) - low``.
* ``volume`` is ``shares / F`` but the shares are not integers for any constant ``F``,
  so its float32 bits are stored (delta-coded): ~3 bytes a cell, half the file, and
  about what the noise in daily volume leaves to compress.
* ``change`` (percent) is rounded to 4 decimals on some days and to 6 on others: it is
  stored as 1e-6 percent integers, as the residual from ``100 * (close / prev_close -
  1)`` of the decoded closes, in units of the day's grid (1e-4 or 1e-6 percent).
* Every decoded float32 gets a *correction*, original bits minus decoded bits (mostly 0,
  stored sparse), so whatever the data (indices with non-cent prices, NaN inside a
  stored range, odd values) the round trip is bit-exact, ``change`` included.

Each integer stream is zigzag-coded, split into byte planes and compressed with lzma.
File: ``MAGIC | version | header length | blake2b(rest) | lzma(JSON header) | streams``;
the digest covers header and streams so any corruption is caught before decoding.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from replication.data.provider import FIELDS, DataError, Market
from replication.files import write_atomic

MAGIC = b"FVAEPACK"
VERSION = 1
PRICES = ("open", "high", "low", "close")
PREFIX = struct.Struct("<8sIQ32s")  # magic, version, header length, blake2b digest
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9}]  # presets 6..9 differ by < 0.5%
SPARSE = 0.05  # store a stream as (positions, values) when fewer cells are nonzero
FIX = "re-create it with `python -m replication.data pack --out FILE`"


# ---------------------------------------------------------------- integer streams --
def _zigzag(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64, copy=False)
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _encode_stream(x: np.ndarray) -> dict:
    """int64 array -> lzma-compressed byte planes of its zigzag code (sparse if mostly 0)."""
    nz = np.flatnonzero(x)
    sparse = len(nz) < SPARSE * len(x)
    y = np.concatenate([np.diff(nz, prepend=-1), x[nz]]) if sparse else x
    u = _zigzag(y)
    width = max(1, (int(u.max(initial=0)).bit_length() + 7) // 8)
    # byte planes, least significant first: high planes are nearly all zero, and each
    # plane is far more regular than interleaved 8-byte words
    planes = b"".join((u >> np.uint64(8 * i)).astype(np.uint8).tobytes() for i in range(width))
    blob = lzma.compress(planes, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    return {"n": len(x), "width": width, "nnz": len(nz) if sparse else -1, "blob": blob}


def _decode_stream(blob: bytes, n: int, width: int, nnz: int) -> np.ndarray:
    m = 2 * nnz if nnz >= 0 else n
    raw = lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    if len(raw) != m * width or not 1 <= width <= 8:
        raise ValueError(f"stream holds {len(raw)} bytes, expected {m} x {width}")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(width, m)
    u = np.zeros(m, dtype=np.uint64)
    for i in range(width):
        u |= planes[i].astype(np.uint64) << np.uint64(8 * i)
    y = _unzigzag(u)
    if nnz < 0:
        return y
    x = np.zeros(n, dtype=np.int64)
    x[np.cumsum(y[:nnz]) - 1] = y[nnz:]
    return x


def _delta(x: np.ndarray) -> np.ndarray:
    """Differences along the cells (the first cell of a stock follows the last of the
    previous stock: as cheap as restarting from 0, and undone by one cumsum)."""
    return np.diff(x, prepend=np.int64(0))


# ------------------------------------------------------------------ float helpers --
def _bits(x: np.ndarray) -> np.ndarray:
    """float32 -> its bits as int64 (differences of bits never overflow)."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)


def _from_bits(b: np.ndarray) -> np.ndarray:
    return b.astype(np.uint32).view(np.float32)


def _rint(x: np.ndarray, fill) -> np.ndarray:
    """Round to int64; ``fill`` where ``x`` is not finite or too large to be exact."""
    with np.errstate(invalid="ignore"):
        ok = np.abs(x) < 2.0 ** 52  # False for NaN and inf
    return np.where(ok, np.rint(np.where(ok, x, 0.0)), fill).astype(np.int64)


class _Layout:
    """Stock-major order of the stored cells of a ``(days, stocks)`` panel."""

    def __init__(self, first: np.ndarray, last: np.ndarray, n_days: int):
        self.shape = (n_days, len(first))
        lengths = (last - first + 1).astype(np.int64)
        if (lengths < 1).any() or (first < 0).any() or (last >= n_days).any():
            raise ValueError("stored ranges first..last do not fit the calendar")
        self.starts = np.cumsum(lengths) - lengths
        self.n = int(lengths.sum())
        # day of each cell: first day of its stock plus its rank within the stock
        self.day = np.arange(self.n) + np.repeat(first - self.starts, lengths)
        self.flat = self.day * len(first) + np.repeat(np.arange(len(first)), lengths)

    def gather(self, a: np.ndarray) -> np.ndarray:
        return np.take(a, self.flat)

    def scatter(self, v: np.ndarray) -> np.ndarray:
        out = np.full(self.shape, np.nan, dtype=np.float32)
        out.ravel()[self.flat] = v
        return out

    def prev(self, x: np.ndarray, head) -> np.ndarray:
        """Previous cell of the same stock (``head``, scalar or array, on a first day)."""
        out = np.empty_like(x)
        out[1:] = x[:-1]
        out[self.starts] = head if np.isscalar(head) else head[self.starts]
        return out

    def ffill(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``x`` with invalid cells replaced by the stock's last valid one (0 before it)."""
        # running max of valid positions = the last valid cell so far; it belongs to this
        # stock only if it is not before the stock's first cell
        idx = np.maximum.accumulate(np.where(valid, np.arange(self.n), -1))
        stock_start = np.repeat(self.starts, np.diff(np.r_[self.starts, self.n]))
        return np.where(idx >= stock_start, x[np.maximum(idx, 0)], 0)

    def segments(self, fbits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Starts and lengths of the runs of constant ``factor`` (a stock starts a run)."""
        brk = np.empty(self.n, dtype=bool)
        brk[0] = True
        np.not_equal(fbits[1:], fbits[:-1], out=brk[1:])
        brk[self.starts] = True
        seg = np.flatnonzero(brk)
        return seg, np.diff(np.r_[seg, self.n])


# ---------------------------------------------------------------------- prices --
def _base_scale(factor: np.ndarray) -> np.ndarray:
    f = factor.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(f) & (f > 0), f, 1.0)


def _price(cents: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The fixed decoding formula ``float32(cents / 100 * F)``."""
    with np.errstate(over="ignore"):  # absurd cells overflow to inf; corrections fix them
        return ((cents / 100.0) * scale).astype(np.float32)


def _fit_scale(prices: list, base: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Per segment, a float64 ``F`` for which :func:`_price` reproduces every price of
    the segment (``base``, the float32 factor, where no single ``F`` does).

    ``p == float32(raw * F)`` pins ``F`` to the rounding cell of ``p`` divided by
    ``raw``. Intersect the cells of the segment, then take, inside the middle half of
    the intersection, the value with most trailing zero bits: its difference from
    ``base`` (whose low 29 bits are zero) is cheap to store.
    """
    lo = np.full(len(base), -np.inf)
    hi = np.full(len(base), np.inf)
    with np.errstate(all="ignore"):
        for p in prices:
            p64 = p.astype(np.float64)
            raw = np.rint(p64 / base * 100.0) / 100.0
            ok = (p64 > 0) & (raw > 0) & (raw < 2.0 ** 40)  # False for NaN
            up = np.nextafter(p, np.float32(np.inf)).astype(np.float64)
            dn = np.nextafter(p, np.float32(-np.inf)).astype(np.float64)
            np.maximum(lo, np.where(ok, (p64 + dn) / 2 / raw, -np.inf), out=lo)
            np.minimum(hi, np.where(ok, (p64 + up) / 2 / raw, np.inf), out=hi)
        L = np.maximum.reduceat(lo, seg)
        H = np.minimum.reduceat(hi, seg)
        ok = np.isfinite(L) & np.isfinite(H) & (L > 0) & (L < H)
        L, H = np.where(ok, 0.75 * L + 0.25 * H, 1.0), np.where(ok, 0.25 * L + 0.75 * H, 1.0)
    lb, hb = L.view(np.int64), H.view(np.int64)  # bits of positive floats are monotonic
    best, todo = lb.copy(), ok.copy()
    for k in range(52, -1, -1):  # the multiple of the largest power of two in [lb, hb]
        cand = ((lb + (1 << k) - 1) >> k) << k
        hit = todo & (cand <= hb)
        best[hit] = cand[hit]
        todo &= ~hit
    return np.where(ok, best.view(np.float64), base[seg])


def _price_cents(lay: _Layout, p: dict, scale: np.ndarray) -> dict:
    """Integer raw cents per price field. A cell without a usable price gets the value
    its residual predicts (so it costs nothing); its correction restores the original."""
    with np.errstate(all="ignore"):
        raw = {k: p[k].astype(np.float64) / scale * 100.0 for k in PRICES}
    c = _rint(raw["close"], 0)
    c = lay.ffill(c, np.abs(raw["close"]) < 2.0 ** 52)
    o = _rint(raw["open"], lay.prev(c, c))
    return {"close": c, "open": o, "high": _rint(raw["high"], np.maximum(o, c)),
            "low": _rint(raw["low"], np.minimum(o, c))}


def _cents_residuals(lay: _Layout, c: dict) -> dict:
    return {"close": _delta(c["close"]),
            "open": c["open"] - lay.prev(c["close"], c["close"]),
            "high": c["high"] - np.maximum(c["open"], c["close"]),
            "low": np.minimum(c["open"], c["close"]) - c["low"]}


def _cents_from_residuals(lay: _Layout, r: dict) -> dict:
    c = np.cumsum(r["close"])
    o = r["open"] + lay.prev(c, c)
    return {"close": c, "open": o, "high": r["high"] + np.maximum(o, c),
            "low": np.minimum(o, c) - r["low"]}


def _change_prediction(lay: _Layout, close: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``100 * (close / prev_close - 1)`` in 1e-6 percent, rounded to a multiple of
    ``unit`` (0 where it cannot be computed)."""
    c = close.astype(np.float64)
    with np.errstate(all="ignore"):
        x = 1e8 * (c / lay.prev(c, np.nan) - 1.0) / unit
    return _rint(x, 0) * unit


# ------------------------------------------------------------------------ codec --
def _encode(mk: Market) -> dict:
    """The integer streams of a market (every stock has at least one stored day)."""
    lay = _Layout(mk.first, mk.last, len(mk.calendar))
    v = {k: lay.gather(mk.fields[k]) for k in FIELDS}
    s = {}
    fbits = _bits(v["factor"])
    s["factor"] = _delta(fbits)
    seg, seg_len = lay.segments(fbits)
    base = _base_scale(v["factor"])
    seg_scale = _fit_scale([v[k] for k in PRICES], base, seg)
    s["scale"] = seg_scale.view(np.int64) - base[seg].view(np.int64)
    scale = np.repeat(seg_scale, seg_len)
    cents = _price_cents(lay, v, scale)
    s.update(_cents_residuals(lay, cents))
    for k in PRICES:
        s[f"{k}_fix"] = _bits(v[k]) - _bits(_price(cents[k], scale))
    s["volume"] = _delta(_bits(v["volume"]))
    # change: a day's grid is 100 units (4 decimals) when most of its values sit on it
    q = v["change"].astype(np.float64) * 1e6
    with np.errstate(invalid="ignore"):
        ok = np.abs(q) < 2.0 ** 52
    on_grid = ok & (np.rint(np.where(ok, q, 0.0)) % 100 == 0)
    coarse = np.bincount(lay.day, on_grid, len(mk.calendar)) >= \
        0.5 * np.bincount(lay.day, ok, len(mk.calendar))
    s["change_unit"] = np.where(coarse, 100, 1).astype(np.int64)
    unit = s["change_unit"][lay.day]
    pred = _change_prediction(lay, v["close"], unit)
    q6 = _rint(q, pred)
    s["change"], s["change_rem"] = np.divmod(q6 - pred, unit)
    s["change_fix"] = _bits(v["change"]) - _bits((q6 / 1e6).astype(np.float32))
    return s


def _decode(s: dict, first: np.ndarray, last: np.ndarray, n_days: int) -> dict:
    lay = _Layout(first, last, n_days)
    fbits = np.cumsum(s["factor"])
    v = {"factor": _from_bits(fbits)}
    seg, seg_len = lay.segments(fbits)
    scale = (_base_scale(v["factor"][seg]).view(np.int64) + s["scale"]).view(np.float64)
    scale = np.repeat(scale, seg_len)
    cents = _cents_from_residuals(lay, s)
    for k in PRICES:
        v[k] = _from_bits(_bits(_price(cents[k], scale)) + s[f"{k}_fix"])
    v["volume"] = _from_bits(np.cumsum(s["volume"]))
    unit = s["change_unit"][lay.day]
    q6 = _change_prediction(lay, v["close"], unit) + s["change"] * unit + s["change_rem"]
    v["change"] = _from_bits(_bits((q6 / 1e6).astype(np.float32)) + s["change_fix"])
    return {k: lay.scatter(v[k]) for k in FIELDS}


# ----------------------------------------------------------------------- public --
def write_pack(market: Market, path, start="2010-01-04", end="2021-01-31") -> dict:
    """Write ``market`` restricted to ``[start, end]`` (see :meth:`Market.between`) to one file.

    The file is written beside ``path``, synced, then renamed over it, so no
    reader ever sees a partial pack. :func:`read_pack` gives the restricted market back
    with every field bit-identical.

    Returns
    -------
    dict: ``bytes`` (compressed size of the header and of each stream), ``total`` (file
    size), ``seconds``, ``cells`` (stored stock-days), ``codes``, ``days``.
    """
    t0 = time.perf_counter()
    missing = [k for k in FIELDS if k not in market.fields]
    if missing:
        raise DataError(f"cannot pack {market.source}: fields {missing} are missing; "
                        f"a pack holds {', '.join(FIELDS)}")
    mk = market.between(start, end)
    if len(mk.codes) == 0:
        raise DataError(f"cannot pack {market.source}: no instrument has a stored day "
                        f"between {start} and {end}")
    outside = ~mk.stored()
    for k in FIELDS:  # only stored ranges are written: anything outside would be lost
        if not np.isnan(mk.fields[k][outside]).all():
            raise DataError(f"cannot pack {market.source}: field {k!r} has values outside "
                            f"the stored range first..last of some stock")
    streams = _encode(mk)
    names = sorted(streams, key=lambda k: -len(streams[k]))  # biggest first: threads balance
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # lzma releases the GIL
        coded = dict(zip(names, pool.map(_encode_stream, (streams[k] for k in names))))
    header = {
        "version": VERSION,
        "calendar": [str(d) for d in mk.calendar], "codes": mk.codes.tolist(),
        "first": mk.first.tolist(), "last": mk.last.tolist(),
        "markets": {m: {c: [[str(a), str(b)] for a, b in sp] for c, sp in codes.items()}
                    for m, codes in mk.markets.items()},
        "streams": [[k, c["n"], c["width"], c["nnz"], len(c["blob"])]
                    for k, c in coded.items()],
    }
    head = lzma.compress(json.dumps(header, separators=(",", ":")).encode())
    payload = b"".join(c["blob"] for c in coded.values())
    digest = hashlib.blake2b(head, digest_size=32)
    digest.update(payload)
    write_atomic(path, PREFIX.pack(MAGIC, VERSION, len(head), digest.digest()) + head + payload)
    return {"bytes": {"header": len(head), **{k: len(c["blob"]) for k, c in coded.items()}},
            "total": PREFIX.size + len(head) + len(payload),
            "seconds": round(time.perf_counter() - t0, 2),
            "cells": len(streams["close"]), "codes": len(mk.codes), "days": len(mk.calendar)}


def read_pack(path) -> Market:
    """Read a file written by :func:`write_pack` back into a :class:`Market`.

    Raises :class:`DataError`, naming the file and how to re-create it, when the file is
    missing, truncated, corrupt or of another format version.
    """
    path = Path(path)

    def bad(why: str) -> DataError:
        return DataError(f"market pack {path} {why}; {FIX}")

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) < PREFIX.size:
        raise bad("is truncated (shorter than its header)")
    magic, version, n_head, digest = PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise bad("is not a market pack (wrong magic bytes)")
    if version != VERSION:
        raise bad(f"has format version {version}, this code reads version {VERSION}")
    body = memoryview(raw)[PREFIX.size:]
    if hashlib.blake2b(body, digest_size=32).digest() != digest:
        raise bad("is corrupt or truncated (checksum mismatch)")
    try:
        header = json.loads(lzma.decompress(body[:n_head]))
        calendar = np.array(header["calendar"], dtype="datetime64[D]")
        first = np.array(header["first"], dtype=np.int64)
        last = np.array(header["last"], dtype=np.int64)
        jobs, pos = {}, n_head
        for name, n, width, nnz, size in header["streams"]:
            jobs[name] = (body[pos:pos + size], n, width, nnz)
            pos += size
        if pos != len(body):
            raise ValueError("stream sizes do not add up to the file size")
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            streams = dict(zip(jobs, pool.map(lambda j: _decode_stream(*j), jobs.values())))
        fields = _decode(streams, first, last, len(calendar))
        markets = {m: {c: [(np.datetime64(a, "D"), np.datetime64(b, "D")) for a, b in sp]
                       for c, sp in codes.items()} for m, codes in header["markets"].items()}
        codes = np.array(header["codes"], dtype=str)
    except (ValueError, KeyError, TypeError, IndexError, lzma.LZMAError) as exc:
        raise bad(f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    return Market(calendar=calendar, codes=codes, fields=fields, first=first, last=last,
                  markets=markets, source=str(path))
