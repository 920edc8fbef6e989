"""Backends: the Backend protocol (``base``) and the registry (``_registry``).

``fedexec.backends.register(name, factory)`` adds a backend,
``capabilities(name)`` tells what it can do, ``available()`` lists the usable ones.
"""

from __future__ import annotations

from ._registry import (
    CAPABILITIES,
    available,
    backends_with,
    capabilities,
    create,
    get_factory,
    names,
    register,
)
from .base import Backend

__all__ = ["CAPABILITIES", "Backend", "available", "backends_with", "capabilities", "create",
           "get_factory", "names", "register"]


def _describe() -> dict[str, list[str]]:  # for the CLI
    return {n: sorted(capabilities(n)) for n in available()}
