"""The errors ``fedexec.data`` raises itself (user code's errors arrive as
``fedexec.TaskError``)."""

from __future__ import annotations

import fedexec

__all__ = ["DataStallError"]


class DataStallError(fedexec.FedexecError, TimeoutError):
    """A dataset's run made no progress (no task finished, nothing consumed) for
    ``DataContext.stall_timeout_s`` seconds.

    Usually a task that blocks forever, or resources that never free up (an actor
    pool asking for more CPUs than the cluster has). The message says which
    operator waits on what: its tasks in flight, its queued inputs, and how much of
    the memory budget is used. Raise ``DataContext.get_current().stall_timeout_s``
    if the tasks are merely slow.
    """
