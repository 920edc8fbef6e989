"""Optional dependencies of ``fedexec.tune``, imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["require"]


def require(module: str, feature: str) -> Any:
    """Import ``module`` for ``feature``, or raise ImportError naming the extra.

    Raises:
        ImportError: ``module`` is not installed; the message says
            ``pip install "fedexec[tune]"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs {module}, which is not installed: "
                          f'pip install "fedexec[tune]" (or pip install {module})') from exc
