"""One nightly run per lake at a time: a lock file `<lake>/_locks/nightly.lock`.

The file is created with O_CREAT | O_EXCL (atomic on a local or NFS-style filesystem), so two
processes can never both hold it. It records host, process id, run id and time. A lock left by
a killed process is stale when its process is gone (same host) or it is older than
`stale_s`; a stale lock is taken over, and the takeover is reported. Object-store lakes have no
atomic create through pyarrow: there the lock is refused with a message saying to use the
cluster's submission id (`ray job submit --submission-id nightly-<date>`) for exclusion.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass

__all__ = ["LockHeld", "NightLock"]


class LockHeld(RuntimeError):
    """Another nightly run holds the lake's lock (the message names it)."""


@dataclass
class NightLock:
    """`with NightLock(lake_root, run_id, wait_s, stale_s):` holds the lock for the block.

    wait_s: how long to wait for a held lock (0: fail at once), seconds; poll_s: how often to
    look again; stale_s: age after which a lock whose owner cannot be checked is taken over."""

    root: str
    run_id: str
    wait_s: float = 0.0
    poll_s: float = 5.0
    stale_s: float = 12 * 3600.0
    taken_over: dict | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.root, "_locks", "nightly.lock")

    def __enter__(self) -> "NightLock":
        if "://" in self.root and not self.root.startswith("file://"):
            raise LockHeld(f"lake {self.root} is on an object store, where this lock cannot be taken atomically: "
                           "run one nightly at a time with `ray job submit --submission-id nightly-<date>`")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and self._stale(holder):
                    if self._take_over(holder):
                        self.taken_over = holder
                    continue
                if time.monotonic() >= deadline:
                    who = (f"run {holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('host')}, since "
                           f"{holder.get('since')})") if holder else "an unreadable lock file"
                    raise LockHeld(f"another nightly run holds {self.path}: {who}; wait for it, or set "
                                   "nightly.lock_wait_s to wait") from None
                time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())) or 0.01)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "t": time.time()}, f)
            return self

    def __exit__(self, *exc) -> None:
        holder = self._holder()
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self._remove()

    def _holder(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True  # the holder is gone (killed): its lock is stale
            except PermissionError:
                return False  # alive, another user's
            return False
        return time.time() - float(holder.get("t", 0)) > self.stale_s

    def _take_over(self, stale: dict) -> bool:
        """Remove the stale lock `stale`, unless another process replaced it meanwhile.

        Two processes may judge the same lock stale; the first removes it and takes a fresh
        one, which the second must not delete. The lock is renamed aside (atomic: one of them
        gets it) and checked; a fresh lock moved aside by mistake goes back, unless a third
        process has taken the path in between (os.link never overwrites)."""
        aside = f"{self.path}.stale-{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another process removed it first
        try:
            with open(aside) as f:
                moved = json.load(f)
        except (OSError, ValueError):
            moved = None
        if moved != stale:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        os.unlink(aside)
        return moved == stale

    def _remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
