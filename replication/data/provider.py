"""Read a Qlib provider directory (``provider_uri``) into a dense in-memory panel.

No ``pyqlib`` at run time. The layout (Qlib's own ``cn_data``)::

    calendars/day.txt                      one trading day per line
    instruments/<market>.txt               CODE<TAB>start<TAB>end, one row per membership spell
    features/<code lower-case>/<field>.day.bin
        little-endian float32; value 0 = index of the first stored day in the
        calendar, then one value per consecutive calendar day.

A :class:`Market` holds every field as a dense ``(days, stocks)`` float32 array with
NaN outside each stock's stored range, which is exactly what Qlib's rolling operators
see: its Cython windows start pre-filled with NaN, so padding a series with NaN before
its first stored day changes nothing.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

FIELDS = ("open", "high", "low", "close", "volume", "factor", "change")
DEFAULT_PROVIDER = "~/.qlib/qlib_data/cn_data"
GET_DATA_HINT = (
    "get Qlib's cn_data with `python -m qlib.run.get_data qlib_data --target_dir "
    "~/.qlib/qlib_data/cn_data --region cn` (see data/README.md), then pass its path "
    "as provider=... or set the QLIB_DATA environment variable"
)


class DataError(ValueError):
    """Bad or missing input data; the message names the file and the fix."""


Span = tuple[np.datetime64, np.datetime64]


@dataclass(frozen=True)
class Market:
    """Dense daily panel of one Qlib provider.

    Attributes
    ----------
    calendar : (D,) datetime64[D] trading days.
    codes : (S,) str upper-case instrument codes, sorted.
    fields : name -> (D, S) float32, NaN outside a stock's stored range.
    first, last : (S,) int64 index of the first / last stored day of each stock
        (Qlib's series for the stock spans exactly these days).
    markets : market name -> {code: [(start, end), ...]} membership spells, as in
        ``instruments/<market>.txt`` (codes without data are already dropped).
    source : where it was read from (for messages only).
    """

    calendar: np.ndarray
    codes: np.ndarray
    fields: dict[str, np.ndarray]
    first: np.ndarray
    last: np.ndarray
    markets: dict[str, dict[str, list[Span]]]
    source: str = ""
    _col: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # the fingerprint, hashed once per Market (init=False: dataclasses.replace starts afresh)
    _fingerprint: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._col.update({c: i for i, c in enumerate(self.codes)})

    def column(self, code: str) -> int:
        """Column index of ``code`` (raises :class:`DataError` if absent)."""
        try:
            return self._col[code.upper()]
        except KeyError:
            raise DataError(f"instrument {code!r} has no data in {self.source}") from None

    def day_index(self, day) -> int:
        """Index of the first calendar day >= ``day``."""
        return int(np.searchsorted(self.calendar, np.datetime64(day, "D")))

    def date_range(self, start=None, end=None) -> tuple[int, int]:
        """Calendar indices ``[i0, i1)`` of the trading days in ``[start, end]``."""
        i0 = 0 if start is None else self.day_index(start)
        i1 = len(self.calendar) if end is None else int(
            np.searchsorted(self.calendar, np.datetime64(end, "D"), side="right"))
        if i1 <= i0:
            raise DataError(
                f"empty date range start={start} end={end}: the calendar of {self.source} "
                f"spans {self.calendar[0]} .. {self.calendar[-1]}; choose dates inside it")
        return i0, i1

    def membership(self, market: str, i0: int = 0, i1: int | None = None) -> np.ndarray:
        """(i1 - i0, S) bool: stock is a member of ``market`` on the day (spells inclusive)."""
        if market not in self.markets:
            raise DataError(
                f"unknown market {market!r}: no instruments/{market}.txt in {self.source}; "
                f"available: {sorted(self.markets)}")
        i1 = len(self.calendar) if i1 is None else i1
        days = self.calendar[i0:i1]
        out = np.zeros((len(days), len(self.codes)), dtype=bool)
        for code, spans in self.markets[market].items():
            j = self._col[code]
            for a, b in spans:
                out[(days >= a) & (days <= b), j] = True
        return out

    def stored(self, i0: int = 0, i1: int | None = None) -> np.ndarray:
        """(i1 - i0, S) bool: the day lies in the stock's stored range (a Qlib row exists)."""
        i1 = len(self.calendar) if i1 is None else i1
        d = np.arange(i0, i1)[:, None]
        return (d >= self.first[None, :]) & (d <= self.last[None, :])

    def trading(self) -> np.ndarray:
        """(D, S) bool: the stock traded that day (valid close and volume > 0).

        This snapshot stores suspended days with the previous close and volume 0
        (Qlib's Yahoo data stores them as NaN), so a valid close alone does not mean
        the stock traded; see data/README.md.
        """
        vol = self.fields["volume"]
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.fields["close"]) & (vol > 0)

    def between(self, start=None, end=None) -> "Market":
        """The market restricted to the calendar days in ``[start, end]``.

        Codes without a stored day in the range are dropped, ``first``/``last`` are
        clipped into the range and re-indexed, and membership spells are clipped to the
        range end and dropped if they start after it.
        """
        i0, i1 = self.date_range(start, end)
        keep = (self.first < i1) & (self.last >= i0) & (self.first <= self.last)
        kept, end_day = set(self.codes[keep].tolist()), self.calendar[i1 - 1]
        markets = {}
        for m, codes in self.markets.items():
            spells = {c: [(a, min(b, end_day)) for a, b in sp if a <= end_day]
                      for c, sp in codes.items() if c in kept}
            markets[m] = {c: sp for c, sp in spells.items() if sp}
        return Market(
            calendar=self.calendar[i0:i1], codes=self.codes[keep],
            fields={k: np.ascontiguousarray(v[i0:i1, keep]) for k, v in self.fields.items()},
            first=np.maximum(self.first[keep], i0) - i0,
            last=np.minimum(self.last[keep], i1 - 1) - i0,
            markets=markets, source=self.source)

    def select(self, codes) -> "Market":
        """The market restricted to ``codes`` (columns in the given order)."""
        cols = np.array([self.column(c) for c in codes], dtype=np.int64)
        keep = set(self.codes[cols].tolist())
        return Market(
            calendar=self.calendar, codes=self.codes[cols],
            fields={k: np.ascontiguousarray(v[:, cols]) for k, v in self.fields.items()},
            first=self.first[cols], last=self.last[cols],
            markets={m: {c: sp for c, sp in cs.items() if c in keep}
                     for m, cs in self.markets.items()},
            source=self.source)

    def fingerprint(self) -> str:
        """Content hash of the panel: calendar, codes, stored ranges, memberships and
        every field (a pack, being bit-exact, has its source directory's fingerprint).
        Hashed once per Market, which is never changed in place."""
        if self._fingerprint:
            return self._fingerprint[0]
        h = hashlib.blake2b(digest_size=8)
        h.update(self.calendar.astype("datetime64[D]").astype(np.int64).tobytes())
        h.update("\n".join(self.codes).encode())
        h.update(self.first.astype(np.int64).tobytes())
        h.update(self.last.astype(np.int64).tobytes())
        for m in sorted(self.markets):
            for c in sorted(self.markets[m]):
                h.update(f"{m}:{c}:{self.markets[m][c]}".encode())
        for k in sorted(self.fields):
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.fields[k]).tobytes())
        self._fingerprint.append(h.hexdigest())
        return self._fingerprint[0]


def resolve_provider(provider: str | os.PathLike | None = None) -> Path:
    """Data location: the argument, else ``$QLIB_DATA``, else ``~/.qlib/qlib_data/cn_data``."""
    raw = provider if provider is not None else os.environ.get("QLIB_DATA", DEFAULT_PROVIDER)
    return Path(raw).expanduser()


def read_calendar(root: Path) -> np.ndarray:
    path = root / "calendars" / "day.txt"
    if not path.is_file():
        raise DataError(f"calendar file {path} is missing: {root} is not a Qlib provider "
                        f"directory; {GET_DATA_HINT}")
    days = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        cal = np.array(days, dtype="datetime64[D]")
    except ValueError as exc:
        raise DataError(f"calendar file {path} has a line that is not a date: {exc}") from None
    if len(cal) == 0 or np.any(np.diff(cal) <= np.timedelta64(0, "D")):
        raise DataError(f"calendar file {path} is empty or not strictly increasing")
    return cal


def parse_instruments(text: str, where: str) -> dict[str, list[Span]]:
    """``CODE<TAB>start<TAB>end`` rows -> {CODE: [(start, end), ...]} (several spells allowed)."""
    out: dict[str, list[Span]] = {}
    for n, ln in enumerate(text.splitlines(), 1):
        if not ln.strip():
            continue
        parts = ln.split()
        if len(parts) != 3:
            raise DataError(f"{where} line {n}: expected CODE<TAB>start<TAB>end, got {ln!r}")
        code, a, b = parts
        out.setdefault(code.upper(), []).append((np.datetime64(a, "D"), np.datetime64(b, "D")))
    return out


def read_instruments(root: Path) -> dict[str, dict[str, list[Span]]]:
    folder = root / "instruments"
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise DataError(f"no instruments/*.txt in {root}; {GET_DATA_HINT}")
    return {p.stem: parse_instruments(p.read_text(), str(p)) for p in files}


def feature_dir(root: Path, code: str) -> Path | None:
    """``features/<code lower-case>``, falling back to the code as written."""
    for name in (code.lower(), code):
        p = root / "features" / name
        if p.is_dir():
            return p
    return None


def read_bin(path: Path, n_days: int) -> tuple[int, np.ndarray]:
    """One ``.day.bin``: (index of its first day, float32 values)."""
    raw = path.read_bytes()
    if len(raw) % 4 or len(raw) < 4:
        raise DataError(f"corrupt data file {path}: size {len(raw)} bytes is not a positive "
                        f"multiple of 4; re-download or regenerate the provider directory")
    a = np.frombuffer(raw, dtype="<f4")
    start = a[0]
    if not np.isfinite(start) or start != int(start) or not 0 <= start < n_days \
            or int(start) + len(a) - 1 > n_days:
        raise DataError(f"corrupt data file {path}: start index {start} with {len(a) - 1} values "
                        f"does not fit the calendar of {n_days} days; re-download the data")
    return int(start), a[1:]


def read_provider(provider=None, fields=FIELDS, codes=None) -> Market:
    """Read a Qlib provider directory into a :class:`Market`.

    Parameters
    ----------
    provider : directory; default ``$QLIB_DATA`` or ``~/.qlib/qlib_data/cn_data``.
    fields : the ``.day.bin`` fields to load (each is required for every stock).
    codes : restrict to these codes (default: every code of every instruments file).
    """
    root = resolve_provider(provider)
    if not root.is_dir():
        raise DataError(f"Qlib data directory {root} does not exist; {GET_DATA_HINT}")
    cal = read_calendar(root)
    markets = read_instruments(root)
    wanted = sorted({c for m in markets.values() for c in m} if codes is None
                    else {c.upper() for c in codes})
    dirs = {c: feature_dir(root, c) for c in wanted}
    missing = [c for c, d in dirs.items() if d is None]
    if missing:
        warnings.warn(f"{len(missing)} instruments listed in {root / 'instruments'} have no "
                      f"feature folder and are skipped (e.g. {', '.join(missing[:5])})",
                      stacklevel=2)
    have = np.array([c for c in wanted if dirs[c] is not None])
    if len(have) == 0:
        raise DataError(f"none of the requested instruments has data under {root / 'features'}")
    D, S = len(cal), len(have)
    out = {f: np.full((D, S), np.nan, dtype=np.float32) for f in fields}
    first = np.full(S, D, dtype=np.int64)
    last = np.full(S, -1, dtype=np.int64)

    def load(j: int) -> None:
        for f in fields:
            path = dirs[have[j]] / f"{f}.day.bin"
            if not path.is_file():
                raise DataError(f"required field file {path} is missing; every instrument "
                                f"needs {', '.join(f'{x}.day.bin' for x in fields)}")
            s, v = read_bin(path, D)
            out[f][s:s + len(v), j] = v
            if len(v):
                first[j] = min(first[j], s)
                last[j] = max(last[j], s + len(v) - 1)

    with ThreadPoolExecutor(8) as pool:  # file reads release the GIL
        list(tqdm(pool.map(load, range(S)), total=S, desc=f"reading {root.name}", unit="stock",
                  disable=None, leave=False))  # disable=None: a bar on terminals only
    keep = set(have.tolist())
    markets = {m: {c: sp for c, sp in spans.items() if c in keep} for m, spans in markets.items()}
    return Market(calendar=cal, codes=have, fields=out, first=first, last=last,
                  markets=markets, source=str(root))


def load_market(provider=None, fields=FIELDS, instruments: str | list[str] | None = None) -> Market:
    """A :class:`Market` from a provider directory **or** a pack file (``pack.py``).

    ``instruments`` (a market name or a list of codes) lets a directory read only the
    files it needs; a pack is always read whole and then subset.
    """
    path = resolve_provider(provider)
    if path.is_file():
        from replication.data.pack import read_pack

        market = read_pack(path)
        if instruments is None:
            return market
        codes = _instrument_codes(market.markets, instruments, str(path))
        return market.select([c for c in codes if c in market._col])
    codes = None
    if instruments is not None:
        if not path.is_dir():
            raise DataError(f"Qlib data directory {path} does not exist; {GET_DATA_HINT}")
        codes = _instrument_codes(read_instruments(path), instruments, str(path))
    return read_provider(path, fields, codes)


def _instrument_codes(markets: dict, instruments, where: str) -> list[str]:
    if isinstance(instruments, str):
        if instruments not in markets:
            raise DataError(f"unknown market {instruments!r}: no instruments/{instruments}.txt "
                            f"in {where}; available: {sorted(markets)}")
        return sorted(markets[instruments])
    codes = sorted({c.upper() for c in instruments})
    if not codes:
        raise DataError("empty instrument list: pass a market name such as 'all' or "
                        "'csi300', or at least one code")
    return codes
