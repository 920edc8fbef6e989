"""``@fedexec.remote``: Ray-style sugar over the current executor.

``@remote`` (bare or with options) turns a function into a :class:`RemoteFunction`
(``f.remote(*args)`` submits a task) and a class into an :class:`ActorClass`
(``Cls.remote(*args)`` creates an actor). Both resolve the executor at call time:
the runtime running the current task if inside one, else the default executor.
``Executor.submit``/``actor`` also accept them: each says what it stands for
through ``__fedexec_remote__``, so the executor never imports this module.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .actors import ActorHandle
from .executor import current_executor
from .options import (
    ACTOR_OPTION_NAMES,
    TASK_OPTION_NAMES,
    ActorOptions,
    TaskOptions,
    check_option_names,
)
from .refs import ObjectRef

__all__ = ["ActorClass", "RemoteFunction", "remote"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class RemoteFunction(Generic[P, R]):
    """A function run as a task with ``.remote(*args, **kwargs)``."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions | None = None):
        self._function = fn
        self._options = options or TaskOptions()
        functools.update_wrapper(self, fn)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        """Submit a task; returns an ``ObjectRef`` (a list if ``num_returns > 1``)."""
        refs = current_executor()._submit(self._function, args, kwargs, self._options)
        return refs[0] if self._options.num_returns == 1 else refs  # type: ignore[return-value]

    def options(self, **opts: Any) -> RemoteFunction[P, R]:
        """A copy with task options (``num_cpus``, ``max_retries``, ``num_returns``...)."""
        return RemoteFunction(self._function, TaskOptions.make(self._options, **opts))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        # Typed as the function, so ``Executor.submit(f, ...)`` types ``ObjectRef[R]``.
        raise TypeError(
            f"remote function {self._function.__name__!r} cannot be called directly; "
            f"use {self._function.__name__}.remote(...) to run it as a task"
        )

    def __fedexec_remote__(self) -> tuple[Callable[P, R], TaskOptions]:
        """What ``Executor.submit`` runs for this object: the function and its options."""
        return self._function, self._options

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFunction, (self._function, self._options))


class ActorClass(Generic[T]):
    """What ``@fedexec.remote`` makes of a class: ``Cls.remote(*args)`` creates an
    actor on the current runtime; ``Cls.options(name=..., ...)`` sets options."""

    def __init__(self, cls: type[T], options: ActorOptions | None = None):
        self._cls = cls
        self._options = options or ActorOptions()
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[T]:
        """Create the actor; returns its handle at once (``__init__`` runs remotely)."""
        return current_executor()._create_actor(self._cls, args, kwargs, self._options)

    def options(self, **opts: Any) -> ActorClass[T]:
        """A copy with actor options (``name``, ``max_restarts``, ``num_cpus``...)."""
        return ActorClass(self._cls, ActorOptions.make(self._options, **opts))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self._cls.__name__!r} cannot be instantiated directly; "
            f"use {self._cls.__name__}.remote(...) instead"
        )

    def __fedexec_remote__(self) -> tuple[type[T], ActorOptions]:
        """What ``Executor.actor`` creates for this object: the class and its options."""
        return self._cls, self._options

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__qualname__})"


@overload
def remote(fn_or_cls: type[T], /) -> ActorClass[T]: ...
@overload
def remote(fn_or_cls: Callable[P, R], /) -> RemoteFunction[P, R]: ...
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
    check_option_names(options)  # an unknown name fails at the decorator, not later
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
