"""A lock beside a cache entry: two processes never generate the same pseudo images at once.

The lock is a file ``<entry>.lock`` created exclusively (``O_CREAT | O_EXCL``, atomic on POSIX
and on NFS v3+) holding the holder's host, PID and start time. While it is held a background
thread touches it every ``heartbeat_s`` seconds. Another process that finds it waits, polling,
until it is released; it breaks the lock as *stale* when the holder is gone: a PID that no longer
exists on this host, or, from any host, a file not touched for ``stale_after_s`` seconds (a
killed job on another node, a preempted SLURM task). Breaking a stale lock and taking it is
re-checked against the file's content, so two waiters do not both break it; if that ever failed,
the cost would be one duplicated generation, never a wrong image: entries are written
atomically and generation is deterministic.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
POLL_S = 2.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class EntryLock:
    """An exclusive, heartbeat-refreshed lock file; use as a context manager (:meth:`acquire` / :meth:`release`).

    Args:
        path: the lock file (``<cache entry>.lock``).
        heartbeat_s: how often the holder touches the file.
        stale_after_s: a lock file untouched for this long is stale, whoever holds it.
        poll_s: how often a waiting process looks again.
    """

    def __init__(self, path: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S,
                 poll_s: float = POLL_S) -> None:
        self.path = Path(path)
        self.heartbeat_s, self.stale_after_s, self.poll_s = heartbeat_s, stale_after_s, poll_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the holder's record ------------------------------------------------------------------------
    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    def holder(self) -> dict[str, Any] | None:
        """The current holder's record (None when unlocked; ``{}`` for an unreadable, half-created file)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def is_stale(self, holder: dict[str, Any] | None = None) -> bool:
        """True when the lock exists but its holder is gone (dead PID on this host, or no heartbeat for too long)."""
        holder = self.holder() if holder is None else holder
        if holder is None:
            return False
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_after_s:
            return True
        same_host = holder.get("host") == socket.gethostname()
        return bool(same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]))

    # -- taking and giving back -----------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale); never waits."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is not None and self.is_stale(holder):
                    if self.holder() == holder:  # nobody broke and re-took it meanwhile
                        logger.info(f"Breaking the stale lock {self.path} (held by {self._describe(holder)}).")
                        self.path.unlink(missing_ok=True)
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
            self._start_heartbeat()
            return True
        return False

    def acquire(self, timeout_s: float | None = None) -> bool:
        """Take the lock, waiting while a live process holds it; False if ``timeout_s`` passes first."""
        began, announced = time.monotonic(), False
        while not self.try_acquire():
            if not announced:
                logger.info(f"Waiting for {self._describe(self.holder())}, which holds {self.path}.")
                announced = True
            if timeout_s is not None and time.monotonic() - began > timeout_s:
                return False
            time.sleep(self.poll_s)
        return True

    def release(self) -> None:
        """Give the lock back (only if this object holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if (self.holder() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    @property
    def held(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> "EntryLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- internals -------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._thread = threading.Thread(target=beat, name=f"lock-heartbeat:{self.path.name}", daemon=True)
        self._thread.start()

    @staticmethod
    def _describe(holder: dict[str, Any] | None) -> str:
        if not holder:
            return "another process"
        return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('created')})"
