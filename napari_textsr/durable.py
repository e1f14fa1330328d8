"""Durable, atomic file writes (the one way this package replaces a file), and safe state reads.

:func:`atomic_write` hands out a temporary path unique to this writer in the
destination's folder; when the block ends without an error the temporary file
is flushed to disk (``fsync``), renamed over the destination (``os.replace``,
atomic on POSIX and Windows) and the folder entry is flushed too. A reader
therefore sees either the old file or the complete new one, never a partial
one, even after a power cut; an error (a full disk, a crash of the writer)
leaves the old file untouched and removes the temporary one. Two writers of
the same destination never share a temporary file (the last rename wins).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_text_atomic", "load_torch_state"]

# mkstemp creates files readable by the owner only; a written file gets the
# permissions an ordinary open() would give it (read once, at import).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success it replaces ``path`` durably.

    Use as ``with atomic_write(dest) as tmp: save_file(..., tmp)``. The folder
    is created if needed. Raises whatever the writer or the file system raises
    (e.g. ``OSError`` with ``errno.ENOSPC``); ``path`` is then unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`; returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_torch_state(path: str | os.PathLike) -> Any:
    """``torch.load`` of a saved training state that can never run code.

    ``weights_only=True``: the unpickler accepts tensors, dicts, lists,
    tuples, strings and numbers and refuses every other object, so a crafted
    file cannot execute anything (see SECURITY.md). Raises ValueError, one line
    naming the file, for a file that is empty, corrupt or holds anything else;
    FileNotFoundError when it is missing.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state to resume: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip and torch errors alike: not a state this package wrote
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{path} cannot be read as a training state (empty, corrupt, or holding more than weights "
            f"and numbers, which is refused): {type(error).__name__}: {first}"
        ) from None
