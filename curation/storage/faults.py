"""Fault injection for crash and concurrency tests: kill or delay the process at a named point.

Set `CURATE_FAULT` to a comma-separated list of `<point>=<action>` rules; the storage layer
calls `fault_point(point)` at the moments a crash or a race matters:

    before_commit:<table>   data files are written, the commit is not (a kill here leaves
                            invisible orphan files; a delay here lets a second writer race)
    after_commit:<table>    the commit landed (a kill here stops a multi-table step between
                            two of its commits)

Actions: `kill` (SIGKILL to this process: no cleanup, no `finally`), `delay:<seconds>`,
`oserror:<n>` (raise OSError the first n times the point is reached in this process: storage
briefly unavailable).
A point may end in `*` to match every table (`before_commit:*=delay:2`). The variable is read
at each call, so a test sets it for one subprocess only. Unset, a call costs one dict lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import time

ENV = "CURATE_FAULT"
_raised: dict[str, int] = {}  # rule -> OSErrors raised so far in this process (oserror:<n>)


def fault_point(point: str) -> None:
    """Apply the rule for `point` from CURATE_FAULT, if any."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for rule in spec.split(","):
        pattern, _, action = rule.strip().partition("=")
        if not fnmatch.fnmatchcase(point, pattern):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("delay:"):
            time.sleep(float(action.split(":", 1)[1]))
        elif action.startswith("oserror:"):
            if _raised.get(rule, 0) < int(action.split(":", 1)[1]):
                _raised[rule] = _raised.get(rule, 0) + 1
                raise OSError(f"storage unavailable (injected by {ENV} at {point})")
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} in rule {rule!r} (kill, delay:<seconds>, oserror:<n>)")
