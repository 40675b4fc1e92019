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


@functools.cache
def host_cpu() -> str:
    """The host CPU and the vector instruction set torch's CPU kernels dispatch to. A CPU
    run repeats bit for bit only on the same kernel path: FactorVAE's Table 1 run of seed 3
    was trained where torch dispatched AVX2 kernels, and an AVX-512 host repeats it only
    with ``ATEN_CPU_CAPABILITY=avx2`` (paper_tables/seen_reruns/README.md)."""
    import torch  # here, not at the top: the package's light modules import this one

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}; torch kernels {torch.backends.cpu.get_cpu_capability()}"
