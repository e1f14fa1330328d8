"""Choosing the compute device, precision and CPU thread count once."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Environment variable that fixes torch's CPU thread count (as --threads does).
THREADS_ENV = "TEXTSR_NUM_THREADS"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_configured_threads: int | None = None


def select_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else is passed to torch.

    Raises ValueError for a name torch does not know (e.g. ``gpu``) and when a
    named accelerator is not available.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    return device


def autocast_dtype(device: torch.device, half: bool | None = None) -> torch.dtype | None:
    """Half precision on GPUs by default (None = full precision)."""
    if half is None:
        half = device.type in ("cuda", "mps")
    return torch.float16 if half and device.type in ("cuda", "mps") else None


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (system RAM available for the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - no way to know; assume a modest machine
        return 4 * 1024**3


# --------------------------------------------------------------------------- CPU threads
def cgroup_cpu_limit(root: str | os.PathLike = _CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 1.5), or None when unlimited or unknown.

    Reads cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``)
    and falls back to cgroup v1 ``cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    (quota -1 = unlimited). Containers (Docker ``--cpus``, Kubernetes limits)
    set these; ``os.cpu_count()`` does not see them.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(cgroup_root: str | os.PathLike = _CGROUP_ROOT) -> int:
    """CPUs this process may really use: its affinity mask (``taskset``, Slurm, ...)
    capped by the cgroup quota (rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, int(limit))
    return max(1, cpus)


def default_num_threads(requested: int | None = None, ranks: int = 1) -> int:
    """The CPU thread count: ``requested`` if given, else ``$TEXTSR_NUM_THREADS``,
    else :func:`available_cpus` shared out over ``ranks`` processes (at least 1).

    ValueError for a count below 1 or an environment value that is not an integer.
    """
    if requested is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if text:
            try:
                requested = int(text)
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be a whole number of threads, got {text!r}") from None
    if requested is not None:
        if isinstance(requested, bool) or int(requested) != requested or requested < 1:
            raise ValueError(f"the number of threads must be at least 1, got {requested!r}")
        return int(requested)
    return max(1, available_cpus() // max(1, ranks))


def configure_threads(requested: int | None = None, ranks: int = 1) -> int:
    """Set torch's intra-op CPU threads from :func:`default_num_threads`; returns the count.

    Called by the entry points (``textsr`` commands, training) before work
    starts. A process decides once: a later call without ``requested`` keeps
    the count already chosen; an explicit ``requested`` always applies.
    torch's own default is the machine's core count, which oversubscribes a
    process limited by affinity or a cgroup quota and makes its threads wait
    for each other when other processes hold the cores.
    """
    global _configured_threads
    if requested is None and _configured_threads is not None:
        return _configured_threads
    threads = default_num_threads(requested, ranks)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _configured_threads = threads
    return threads
