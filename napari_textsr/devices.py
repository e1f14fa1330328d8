"""Choosing the compute device and precision once."""

from __future__ import annotations

import torch


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
