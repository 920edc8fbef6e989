"""The fedexec executor serve uses in this process.

Inside the controller, proxy and replica actors it is the runtime running the
actor (captured at the actor's ``__init__``, since serve's own threads do not
carry the actor's task context); in a driver it is the current executor.
"""

from __future__ import annotations

from typing import Any

import fedexec

_executor: Any = None


def remember_executor(executor: Any = None) -> None:
    """Pin ``executor`` (default: the current one) as this process's (called in
    the actors' ``__init__``, and by ``serve.start(executor=...)``)."""
    global _executor
    _executor = executor if executor is not None else fedexec.current_executor()


def forget_executor() -> None:
    global _executor
    _executor = None


def executor() -> fedexec.Executor:
    """The pinned executor if it is still running, else the current one."""
    ex = _executor
    if ex is not None and not ex.is_shutdown:
        return ex
    return fedexec.current_executor()
