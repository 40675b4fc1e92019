"""Result files: atomic writes (a reader sees the old file or the complete new one, never a
part) and the provenance every result records (the repository's git commit, the host CPU)."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, sync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def git_commit() -> str:
    """The commit of the code this process runs: HEAD, with ``-dirty`` when the package
    has uncommitted changes, read once per process, at ``import replication``. A
    long-lived worker (a campaign lane) thus reports the code it loaded, not a HEAD
    committed while it trained."""
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "replication"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def host_cpu() -> str:
    """The host CPU and the vector instruction set torch's CPU kernels dispatch to, and
    whether subnormal floats are flushed to zero (:func:`flush_subnormals`). A CPU run
    repeats bit for bit only on the same kernel path: FactorVAE's Table 1 run of seed 3
    was trained where torch dispatched AVX2 kernels, and an AVX-512 host repeats it only
    with ``ATEN_CPU_CAPABILITY=avx2`` (paper_tables/seen_reruns/README.md)."""
    import torch  # here, not at the top: the package's light modules import this one

    flushed = torch.tensor([1e-39]).mul(1.0).item() == 0.0
    return f"{_cpu_name()}; torch kernels {torch.backends.cpu.get_cpu_capability()}" \
        + ("; subnormals flushed to zero" if flushed else "")


@functools.cache
def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


FLUSH_ENV = "REPLICATION_FLUSH_SUBNORMALS"


def flush_subnormals() -> bool:
    """With ``REPLICATION_FLUSH_SUBNORMALS=1``, have the CPU treat float32 numbers below
    1.2e-38 (subnormals) as zero, and say whether it now does.

    Why: the Transformer's ``weight_decay`` drives the weights of its dead feed-forward
    units towards zero, and by epoch 10 of a Table 2 run tens of thousands of them are
    subnormal. Arithmetic on subnormals is slow on this repository's Intel host: one
    training step on the epoch-10 checkpoint of Trans m = 200 seed 0 took a median 2.07 s,
    against 0.20 s with them flushed or with fresh weights (one thread, Intel Xeon,
    2026-12-05), and that run's epochs had grown from 150 s to 1,519 s. The Table 1 Trans
    runs (hosts not recorded) kept ~300 s epochs throughout. Off by default: flushing
    changes only values below 1.2e-38, but a re-run must repeat its original bit for bit
    (paper_tables/seen_reruns/README.md). A run records it in ``cpu`` (:func:`host_cpu`)."""
    import torch

    if os.environ.get(FLUSH_ENV, "0") not in ("0", "1"):
        raise ValueError(f"{FLUSH_ENV}={os.environ[FLUSH_ENV]!r}: set it to 1 (flush) or 0")
    if os.environ.get(FLUSH_ENV) == "1":
        torch.set_flush_denormal(True)
    return "subnormals flushed" in host_cpu()
