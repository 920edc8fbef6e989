"""Whether a process id is a live process (used by the runtime, the CLI and the
autoscaler to tell that a process they recorded is gone)."""

from __future__ import annotations

import contextlib
import os

__all__ = ["pid_alive"]


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` runs. A zombie (exited, not reaped: a daemon whose parent is
    an init that does not reap, as in some containers) counts as gone; a process
    of another user (PermissionError) counts as running."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[-1][:1] != "Z"
    return True
