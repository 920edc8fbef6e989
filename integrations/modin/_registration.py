"""Registration with Modin: the engine name, the backend and the factory.

Modin 0.37 finds an execution's factory by name: for ``StorageFormat="Pandas"`` and
``Engine="Fedexec"`` it looks up ``factories.PandasOnFedexecFactory`` and calls its
``prepare()`` whenever that execution becomes the current one. Registering is
three documented steps: set that attribute, ``Engine.add_option("Fedexec")``,
``Backend.register_backend("Fedexec", Execution("Pandas", "Fedexec"))``.

Note Modin's own side effect of ``Engine.add_option``: once a custom engine
exists, Modin's default engine (when none is configured) becomes ``"Python"``.
"""

from __future__ import annotations

import threading

from modin.config import Backend, Engine, Execution
from modin.core.execution.dispatching.factories import factories
from modin.core.execution.dispatching.factories.factories import BaseFactory

from ._engine import initialize_fedexec

__all__ = ["BACKEND", "ENGINE", "PandasOnFedexecFactory", "register"]

#: What users pass to ``modin.config.Engine.put``.
ENGINE = "Fedexec"
#: The matching ``modin.config.Backend`` name (``Backend.put("Fedexec")`` works too).
BACKEND = "Fedexec"

_lock = threading.Lock()
_registered = False


class PandasOnFedexecFactory(BaseFactory):
    """Modin's factory for the ``Pandas`` storage format on the ``Fedexec`` engine."""

    @classmethod
    def prepare(cls) -> None:
        """Initialise the engine (an executor, partition counts) and load the I/O class."""
        from ._io import PandasOnFedexecIO

        initialize_fedexec()
        cls.io_cls = PandasOnFedexecIO


def register() -> None:
    """Make ``"Fedexec"`` a Modin engine and backend (idempotent; importing
    ``fedexec.integrations.modin`` calls it). Selecting it is up to the user:
    ``modin.config.Engine.put("Fedexec")``."""
    global _registered
    with _lock:
        if _registered:
            return
        factories.PandasOnFedexecFactory = PandasOnFedexecFactory
        Engine.add_option(ENGINE)
        execution = Execution(storage_format="Pandas", engine=ENGINE)
        try:
            Backend.register_backend(BACKEND, execution)
        except ValueError:  # registered before (e.g. this module was reloaded)
            if Backend.get_backend_for_execution(execution) != BACKEND:
                raise
        _registered = True
