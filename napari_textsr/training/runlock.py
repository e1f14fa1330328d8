"""One live training run per output: a lock file naming its holder.

``textsr train`` (and the napari training widget) lock ``OUT/run.lock``;
``textsr pretrain-encoder`` locks ``OUT.lock`` beside its weights file. A
second run into the same output, or a ``--resume`` while the first is still
running, is refused with :class:`RunLockedError`, which names the holder
(process id, host, start time and command). A lock whose process is gone
(the run was killed with ``kill -9`` or the machine rebooted) is stale and
is taken over silently; a lock held on another host cannot be checked and
must be removed by hand once that run is known to be dead.

The lock file is created complete and atomically (written to a unique
temporary file, then hard-linked to its name, which fails if it exists), so
a reader never sees a half-written lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["RunLock", "RunLockedError", "LockHolder"]


class RunLockedError(ValueError):
    """Another live run holds the output's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``pid`` on ``host`` since ``started`` (ISO 8601, UTC)."""

    pid: int
    host: str
    started: str
    command: str = ""
    # Start time of the process in clock ticks since boot (Linux), so a reused pid is not taken for the holder.
    process_start: str = ""

    def describe(self) -> str:
        text = f"pid {self.pid} on {self.host}, started {self.started}"
        return text + (f" ({self.command})" if self.command else "")


def _process_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5), counted after the command name


def _alive(holder: LockHolder) -> bool:
    if holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    start = _process_start(holder.pid)
    return not (holder.process_start and start and start != holder.process_start)


class RunLock:
    """The lock of one output (``path`` is the lock file). Use as a context manager or acquire/release.

    ``acquire`` raises :class:`RunLockedError` naming a live holder, and
    ValueError when the lock's folder is a file.
    """

    def __init__(self, path: str | os.PathLike, command: str = "") -> None:
        self.path = Path(path)
        self.command = command or " ".join(sys.argv)
        self._holder: LockHolder | None = None

    @classmethod
    def for_folder(cls, folder: str | os.PathLike, command: str = "") -> "RunLock":
        return cls(Path(folder) / "run.lock", command)

    def read(self) -> LockHolder | None:
        """The current holder, or None (no lock, or an unreadable one)."""
        try:
            values = json.loads(self.path.read_text())
            return LockHolder(
                **{k: values[k] for k in ("pid", "host", "started")},
                command=str(values.get("command", "")),
                process_start=str(values.get("process_start", "")),
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def acquire(self) -> LockHolder:
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file, not a folder: give a folder for the run's output")
        folder.mkdir(parents=True, exist_ok=True)
        me = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            command=self.command[:500],
            process_start=_process_start(os.getpid()),
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(asdict(me), handle)
            for _attempt in range(3):
                try:
                    os.link(tmp, self.path)
                    self._holder = me
                    return me
                except FileExistsError:
                    holder = self.read()
                    if holder is not None and (holder.host != me.host or _alive(holder)):
                        where = (
                            ""
                            if holder.host == me.host
                            else (f"; it runs on another host, so if it is dead remove {self.path} by hand")
                        )
                        raise RunLockedError(
                            f"{folder} is in use by another training run: {holder.describe()}{where}. "
                            "Wait for it to finish or stop it, or write to another folder."
                        ) from None
                    # Stale (its process is gone) or unreadable: take it over.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
            raise RunLockedError(f"{self.path}: could not take the lock (other runs keep taking it)")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if self._holder is None:
            return
        holder = self.read()
        if holder is not None and holder.pid == self._holder.pid and holder.started == self._holder.started:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._holder = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
