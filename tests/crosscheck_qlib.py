"""Cross-check ``replication.data.alpha158`` against real Qlib's ``D.features``.

Needs ``pyqlib`` (the project itself never imports it), so run it from a separate
environment ``QLIB_ENV`` that has it (``python -m venv QLIB_ENV && QLIB_ENV/bin/pip
install pyqlib``), from the repository root::

    PYTHONPATH=. QLIB_ENV/bin/python tests/crosscheck_qlib.py \\
        --provider ../shared/data/cn_data [--instruments all|csi300|CODE,CODE,...] \\
        [--start 2019-01-01] [--end 2019-12-31] [--limit 50] [--out summary.json] \\
        [--dump mismatches.csv]

Both sides compute the 20 Alpha158 features and ``LABEL0`` (Qlib from the expression
strings in ``tests/qlib_reference.py``), rows are aligned on (datetime, instrument),
and per column it prints

* ``rows``       rows present on both sides,
* ``value``      among rows where Qlib's value is finite: ours finite and within
                 rtol 1e-4 / atol 1e-6,
* ``pattern``    same NaN / +inf / -inf / finite state,
* ``match``      pattern equal and, where finite, within tolerance (the headline),
* ``explained``  mismatching rows recognised as a known Qlib/pandas numerical
                 artifact (``ARTIFACTS``: degenerate windows where ours is the exact
                 value), and ``match+expl``,

then totals, the mismatch categories with examples, and writes a JSON summary
(``--dump`` also writes every mismatching row as CSV).
A market name applies its membership spells on both sides; ``--limit`` or a code
list compares stored rows without membership (Qlib's list semantics).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import qlib_reference as R  # noqa: E402

RTOL, ATOL = 1e-4, 1e-6
COLUMNS = (*R.FEATURES, R.LABEL)
CATEGORIES = {
    "qlib_nan_ours_finite": "Qlib NaN, ours finite",
    "qlib_finite_ours_nan": "Qlib finite, ours NaN",
    "qlib_inf_ours_other": "Qlib +-inf, ours something else",
    "qlib_other_ours_inf": "Qlib finite/NaN, ours +-inf",
    "value": "both finite, outside rtol 1e-4 / atol 1e-6",
}


def _state(x: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    s = np.zeros(x.shape, dtype=np.int8)
    s[np.isnan(x)] = 1
    s[np.isposinf(x)] = 2
    s[np.isneginf(x)] = 3
    return s


def compare_arrays(q: np.ndarray, o: np.ndarray, rtol=RTOL, atol=ATOL) -> dict:
    """Per-row comparison of one column: masks and counts (q = Qlib, o = ours)."""
    q = q.astype(np.float64)
    o = o.astype(np.float64)
    sq, so = _state(q), _state(o)
    fin = (sq == 0) & (so == 0)
    close = np.zeros(len(q), dtype=bool)
    close[fin] = np.abs(q[fin] - o[fin]) <= atol + rtol * np.abs(q[fin])
    same = sq == so
    ok = same & ((sq != 0) | close)
    cats = {
        "qlib_nan_ours_finite": (sq == 1) & (so == 0),
        "qlib_finite_ours_nan": (sq == 0) & (so == 1),
        "qlib_inf_ours_other": (sq >= 2) & ~same,
        "qlib_other_ours_inf": (sq < 2) & (so >= 2),
        "value": fin & ~close,
    }
    qfin = sq == 0
    return {
        "rows": int(len(q)),
        "qlib_finite": int(qfin.sum()),
        "value_ok": int((qfin & (so == 0) & close).sum()),
        "pattern_ok": int(same.sum()),
        "match_ok": int(ok.sum()),
        "masks": cats,
    }


def qlib_features(provider: str, instruments, start, end) -> tuple[pd.DataFrame, float]:
    """Real Qlib: (DataFrame indexed (datetime, instrument), seconds)."""
    import qlib
    from qlib.data import D

    qlib.init(provider_uri=provider, region="cn", logging_level=logging.WARNING)
    inst = D.instruments(instruments) if isinstance(instruments, str) else list(instruments)
    t0 = time.time()
    df = D.features(inst, list(R.QLIB_EXPRESSIONS.values()), start_time=start, end_time=end,
                    freq="day")
    secs = time.time() - t0
    df.columns = list(R.QLIB_EXPRESSIONS)
    df = df.swaplevel().sort_index()
    df.index = df.index.set_names(["datetime", "instrument"])
    return df, secs


def our_features(provider: str, instruments, start, end) -> tuple[pd.DataFrame, float]:
    from replication.data import alpha158

    t0 = time.time()
    df = alpha158(provider, instruments, start, end)
    secs = time.time() - t0
    return df.sort_index(), secs


def _keys(idx: pd.MultiIndex, codes: pd.Index) -> np.ndarray:
    day = idx.get_level_values("datetime").values.astype("datetime64[D]").astype(np.int64)
    inst = codes.get_indexer(idx.get_level_values("instrument").str.upper())
    return day * 100_000 + inst


# Known Qlib/pandas numerical artifacts (see ``explain``).
ARTIFACTS = {
    "pandas_var_residual": "VSTD5/WVMA: every window value equal, so ours is exactly 0, but "
                           "pandas 3's online rolling std keeps a history-dependent residual "
                           "that Qlib divides by ~1e-12",
    "degenerate_close": "RSQR/CORR: the close window holds <= 2 distinct values within 8 "
                        "float32 ulps (a suspension's jitter); Qlib's Cython sums / pandas "
                        "cancel catastrophically and its std guard sees residual noise",
}


def explain(col: str, qv: np.ndarray, ov: np.ndarray, bad: np.ndarray, idx: pd.MultiIndex,
            close: "callable | None") -> np.ndarray:
    """Artifact name (or "") for each mismatching row ``bad`` of column ``col``."""
    why = np.full(len(bad), "", dtype=object)
    if col in ("VSTD5", "WVMA5", "WVMA60"):
        why[(ov[bad] == 0) & (np.abs(qv[bad]) >= 1e6)] = "pandas_var_residual"
    elif (col.startswith("RSQR") or col.startswith("CORR")) and close is not None and len(bad):
        n = int(col[4:])
        for k, p in enumerate(bad):
            w = close(idx[p][1], idx[p][0], n)
            u = np.unique(w[~np.isnan(w)])
            if 1 <= len(u) <= 2 and (u[-1] - u[0]) <= 8 * np.spacing(np.float32(u[-1])):
                why[k] = "degenerate_close"
    return why


def _close_lookup(provider: str, codes):
    """close(code, day, n) -> the n stored closes ending at ``day`` (float32)."""
    from replication.data.provider import read_provider

    m = read_provider(provider, fields=("close",), codes=sorted(set(codes)))

    def close(code, day, n):
        j = m.column(code)
        i = m.day_index(np.datetime64(pd.Timestamp(day).date(), "D"))
        return m.fields["close"][max(m.first[j], i - n + 1):i + 1, j]
    return close


def compare(q: pd.DataFrame, o: pd.DataFrame, examples: int = 5, dump: list | None = None,
            provider: str | None = None) -> dict:
    """Align two (datetime, instrument) frames and compare every column.

    ``in_samples`` counts restrict the comparison to stock-days that can be a sample's
    day s (the stock traded on each of the 20 days ending there; needs ``provider``).

    ``dump``: a list that receives one DataFrame of every mismatching row per column.
    ``provider``: lets RSQR/CORR mismatches be checked for degenerate close windows.
    """
    codes = pd.Index(sorted(set(q.index.get_level_values("instrument").str.upper())
                            | set(o.index.get_level_values("instrument").str.upper())))
    kq, ko = _keys(q.index, codes), _keys(o.index, codes)
    common, iq, io = np.intersect1d(kq, ko, assume_unique=True, return_indices=True)
    only_q = np.setdiff1d(kq, common, assume_unique=True)
    only_o = np.setdiff1d(ko, common, assume_unique=True)

    def where(k):
        return (str(np.datetime64(int(k // 100_000), "D")), codes[int(k % 100_000)])

    idx = q.index[iq]
    out = {"rows_qlib": int(len(q)), "rows_ours": int(len(o)), "rows_compared": int(len(common)),
           "only_qlib": int(len(only_q)), "only_ours": int(len(only_o)),
           "only_qlib_examples": [where(k) for k in only_q[:examples]],
           "only_ours_examples": [where(k) for k in only_o[:examples]],
           "columns": {}}
    per_col = {}
    for col in COLUMNS:
        qv = q[col].to_numpy()[iq]
        ov = o[col].to_numpy()[io]
        per_col[col] = (qv, ov, compare_arrays(qv, ov))
    close = None
    if provider is not None:
        need = set()
        for col, (qv, ov, r) in per_col.items():
            if col.startswith("RSQR") or col.startswith("CORR"):
                bad = np.flatnonzero(np.logical_or.reduce(list(r["masks"].values())))
                need |= set(idx.get_level_values(1)[bad])
        close = _close_lookup(provider, need) if need else None

    in_samples = _in_samples(provider, idx) if provider is not None else None
    tot = {"rows": 0, "qlib_finite": 0, "value_ok": 0, "pattern_ok": 0, "match_ok": 0,
           "explained": 0, "rows_in_samples": 0, "match_ok_in_samples": 0}
    for col, (qv, ov, r) in per_col.items():
        masks = r.pop("masks")
        wrong = np.logical_or.reduce(list(masks.values()))
        bad = np.flatnonzero(wrong)
        if in_samples is not None:
            r["rows_in_samples"] = int(in_samples.sum())
            r["match_ok_in_samples"] = int((in_samples & ~wrong).sum())
        why = explain(col, qv, ov, bad, idx, close)
        r["explained"] = int((why != "").sum())
        r["artifacts"] = {a: int((why == a).sum()) for a in ARTIFACTS if (why == a).any()}
        for k in tot:
            tot[k] += r.get(k, 0)
        r["mismatches"] = {}
        for cat, m in masks.items():
            n = int(m.sum())
            if not n:
                continue
            pos = np.flatnonzero(m)
            if cat == "value":  # worst first, then spread over the rest
                rel = np.abs(qv[pos] - ov[pos]) / np.maximum(np.abs(qv[pos]), 1e-300)
                pick = list(pos[np.argsort(-rel)[:max(1, examples // 2)]])
                pick += [p for p in pos[np.linspace(0, n - 1, examples).astype(int)]
                         if p not in pick]
                pick = pick[:examples]
            else:
                pick = list(pos[np.linspace(0, n - 1, min(n, examples)).astype(int)])
            reason = dict(zip(bad.tolist(), why.tolist()))
            r["mismatches"][cat] = {
                "count": n,
                "unexplained": int(sum(reason[p] == "" for p in pos.tolist())),
                "examples": [{"instrument": idx[p][1], "date": str(idx[p][0].date()),
                              "qlib": float(qv[p]), "ours": float(ov[p]),
                              "artifact": reason[p]} for p in pick]}
        out["columns"][col] = r
        if dump is not None:
            cat = np.full(len(qv), "", dtype=object)
            for c, m in masks.items():
                cat[m] = c
            dump.append(pd.DataFrame({
                "column": col, "datetime": idx.get_level_values(0)[bad],
                "instrument": idx.get_level_values(1)[bad], "category": cat[bad],
                "qlib": qv[bad], "ours": ov[bad], "artifact": why}))
    out["total"] = tot
    return out


def _in_samples(provider: str, idx: pd.MultiIndex) -> np.ndarray:
    """Per row of ``idx``: the stock traded on each of the 20 days ending that day."""
    from replication.data.dataset import window_traded
    from replication.data.provider import read_provider

    codes = sorted(set(idx.get_level_values("instrument")))
    m = read_provider(provider, fields=("close", "volume"), codes=codes)
    ok = window_traded(m, 20)
    days = m.calendar.searchsorted(idx.get_level_values("datetime").values.astype("datetime64[D]"))
    return ok[days, [m.column(c) for c in idx.get_level_values("instrument")]]


def _provenance(provider: str) -> dict:
    import qlib

    from replication.data.provider import read_provider
    from replication.files import git_commit

    return {"git_commit": git_commit(), "pyqlib": qlib.__version__,
            "pandas": pd.__version__, "numpy": np.__version__,
            "data_fingerprint": read_provider(provider).fingerprint(),
            "device": f"CPU ({os.cpu_count()} cores)"}


def _frac(a: int, b: int) -> str:
    return f"{a / b:.6f}" if b else "   n/a  "


def report(s: dict, file=sys.stdout) -> None:
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"rows: qlib {s['rows_qlib']}, ours {s['rows_ours']}, compared {s['rows_compared']}, "
      f"only qlib {s['only_qlib']} {s['only_qlib_examples']}, "
      f"only ours {s['only_ours']} {s['only_ours_examples']}")
    if "qlib_seconds" in s:
        p(f"time: qlib D.features {s['qlib_seconds']:.1f}s, ours alpha158 {s['ours_seconds']:.1f}s")
    p(f"{'column':8s} {'rows':>10s} {'qlib_fin':>10s} {'value':>9s} {'pattern':>9s} "
      f"{'match':>9s} {'n_bad':>8s} {'explained':>9s} {'match+expl':>10s} {'in_samples':>10s}")
    rows = list(s["columns"].items()) + [("TOTAL", s["total"])]
    for name, r in rows:
        p(f"{name:8s} {r['rows']:10d} {r['qlib_finite']:10d} "
          f"{_frac(r['value_ok'], r['qlib_finite']):>9s} {_frac(r['pattern_ok'], r['rows']):>9s} "
          f"{_frac(r['match_ok'], r['rows']):>9s} {r['rows'] - r['match_ok']:8d} "
          f"{r['explained']:9d} {_frac(r['match_ok'] + r['explained'], r['rows']):>10s} "
          f"{_frac(r.get('match_ok_in_samples', 0), r.get('rows_in_samples', 0)):>10s}")
    for name, r in s["columns"].items():
        for cat, m in r.get("mismatches", {}).items():
            p(f"  {name} {CATEGORIES[cat]}: {m['count']} ({m['unexplained']} unexplained)")
            for e in m["examples"]:
                p(f"      {e['instrument']} {e['date']} qlib={e['qlib']!r} ours={e['ours']!r}"
                  f"  {e['artifact'] or 'UNEXPLAINED'}")
    p("known artifacts:")
    for a, text in ARTIFACTS.items():
        p(f"  {a}: {text}")


def run(provider: str, instruments="all", start=None, end=None, limit=None,
        examples: int = 5, dump: list | None = None) -> dict:
    """Compute both sides and compare; ``limit`` takes every k-th code of the market."""
    if limit:
        from replication.data.provider import read_instruments, resolve_provider

        markets = read_instruments(resolve_provider(provider))
        codes = sorted(markets[instruments]) if isinstance(instruments, str) else sorted(instruments)
        if start is not None or end is not None:  # only codes with a spell in the range
            a = np.datetime64(start or "1900-01-01", "D")
            b = np.datetime64(end or "2200-01-01", "D")
            spells = markets.get(instruments, {}) if isinstance(instruments, str) else {}
            codes = [c for c in codes if c not in spells
                     or any(x <= b and y >= a for x, y in spells[c])]
        step = max(1, len(codes) // limit)
        instruments = codes[::step][:limit]
    q, tq = qlib_features(provider, instruments, start, end)
    o, to = our_features(provider, instruments, start, end)
    s = compare(q, o, examples, dump, provider)
    s.update(_provenance(provider))
    s.update({"provider": str(provider), "instruments": instruments if isinstance(instruments, str)
              else f"{len(instruments)} codes", "start": start, "end": end,
              "qlib_seconds": tq, "ours_seconds": to, "rtol": RTOL, "atol": ATOL})
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", default=os.environ.get("QLIB_DATA", "~/.qlib/qlib_data/cn_data"))
    ap.add_argument("--instruments", default="all",
                    help="market name (all, csi300) or comma-separated codes")
    ap.add_argument("--start")
    ap.add_argument("--end")
    ap.add_argument("--limit", type=int, help="compare only this many codes of the market")
    ap.add_argument("--examples", type=int, default=5, help="examples per mismatch category")
    ap.add_argument("--out", help="write the JSON summary here")
    ap.add_argument("--dump", help="write every mismatching row here (CSV)")
    a = ap.parse_args(argv)
    inst = a.instruments if "," not in a.instruments else a.instruments.split(",")
    dump = [] if a.dump else None
    s = run(os.path.expanduser(a.provider), inst, a.start, a.end, a.limit, a.examples, dump)
    report(s)
    if a.dump:
        pd.concat(dump, ignore_index=True).to_csv(a.dump, index=False)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(s, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
