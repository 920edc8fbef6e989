"""``@fedexec.remote``: Ray-style sugar over the current executor.

``@remote`` (bare or with options) turns a function into a :class:`RemoteFunction`
(``f.remote(*args)`` submits a task) and a class into an
:class:`~fedexec.actors.ActorClass`. Both resolve the executor at call time: the
runtime running the current task if inside one, else the default executor.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .actors import ActorClass
from .options import ACTOR_OPTION_NAMES, TASK_OPTION_NAMES, ActorOptions, TaskOptions

__all__ = ["RemoteFunction", "remote"]

P = ParamSpec("P")
R = TypeVar("R")


class RemoteFunction(Generic[P, R]):
    """A function run as a task with ``.remote(*args, **kwargs)``."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions | None = None):
        self._function = fn
        self._options = options or TaskOptions()
        functools.update_wrapper(self, fn)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Submit a task; returns an ``ObjectRef`` (a list if ``num_returns > 1``)."""
        from .executor import current_executor

        refs = current_executor()._submit(self._function, args, kwargs, self._options)
        return refs[0] if self._options.num_returns == 1 else refs

    def options(self, **opts: Any) -> RemoteFunction[P, R]:
        """A copy with task options (``num_cpus``, ``max_retries``, ``num_returns``...)."""
        return RemoteFunction(self._function, TaskOptions.make(self._options, **opts))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._function.__name__!r} cannot be called directly; "
            f"use {self._function.__name__}.remote(...) to run it as a task"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFunction, (self._function, self._options))


@overload
def remote(fn_or_cls: Callable[P, R], /) -> RemoteFunction[P, R]: ...
@overload
def remote(fn_or_cls: type[R], /) -> ActorClass[R]: ...
@overload
def remote(**options: Any) -> Callable[[Any], Any]: ...


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote task, or a class an actor class.

    Usable bare (``@remote``) or with options (``@remote(num_cpus=2, max_retries=1)``).
    Options are validated here: an unknown option raises ``ValueError``.
    """
    if args:
        if len(args) != 1 or options or not callable(args[0]):
            raise TypeError("use @fedexec.remote or @fedexec.remote(option=value, ...)")
        return _make(args[0], {})
    return functools.partial(_make, options=options)


def _make(target: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(target):
        bad = set(options) - ACTOR_OPTION_NAMES
        if bad:
            raise ValueError(f"unknown actor option(s) {sorted(bad)}")
        return ActorClass(target, ActorOptions.make(**options))
    if not callable(target):
        raise TypeError(f"@remote needs a function or a class, got {target!r}")
    bad = set(options) - TASK_OPTION_NAMES
    if bad:
        raise ValueError(f"unknown task option(s) {sorted(bad)}")
    return RemoteFunction(target, TaskOptions.make(**options))
