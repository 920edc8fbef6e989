"""``native-cluster``: the native backend on a 3-node ``fedexec.testing.Cluster``,
registered as a backend so the whole conformance suite also runs multi-node.

Each executor gets its own cluster whose nodes together offer what the executor
asked for, with the driver connected to the head: the head has three quarters of
the CPUs and every custom resource and GPU (so any single demand a test makes
still fits one node, as it does on one machine), the other CPUs are on two more
nodes (``num_cpus=4`` → 3, 1, 0; ``num_cpus=8`` → 6, 1, 1). Work that does not fit
the head when it is busy is spilled over TCP and its results transferred back,
actors go where there is room, so the suite exercises the multi-node paths.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fedexec import backends
from fedexec.backends.native import NativeBackend
from fedexec.testing import Cluster

NAME = "native-cluster"


def _split(cpus: float) -> list[float]:
    """CPUs of the head and two more nodes, summing to ``cpus``."""
    head = min(cpus, max(1.0, math.ceil(cpus * 3 / 4)))
    second = min(cpus - head, math.ceil((cpus - head) / 2))
    return [head, second, cpus - head - second]


class ClusterBackend(NativeBackend):
    """A native client of a private 3-node cluster (stopped with the executor)."""

    name = NAME
    capabilities = NativeBackend.capabilities | {"multi_node"}

    def __init__(self, config: Any) -> None:
        cpus = config.cpu_count(4)
        head, second, third = _split(cpus)
        extra: dict[str, Any] = {"resources": dict(config.resources),
                                 "num_gpus": config.num_gpus or 0}
        if config.object_store_memory:
            extra["object_store_memory"] = config.object_store_memory
        cluster = Cluster(head_node_args={"num_cpus": head, **extra},
                          initializer=config.initializer, initargs=config.initargs)
        try:
            cluster.add_node(num_cpus=second, wait=False)
            cluster.add_node(num_cpus=third, wait=False)
            cluster.wait_for_nodes()
            # The cluster got the sizing and the initializer; the driver just joins.
            super().__init__(dataclasses.replace(
                config, address=cluster.address, token=cluster.token, num_cpus=None,
                num_gpus=None, resources={}, object_store_memory=None, initializer=None))
        except BaseException:
            cluster.shutdown()
            raise
        self._cluster = cluster

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        try:
            super().shutdown(wait, cancel_futures)
        finally:
            if wait:
                self._cluster.shutdown()
            else:
                import threading

                threading.Thread(target=self._stop_later, daemon=True).start()

    def _stop_later(self) -> None:
        import time

        deadline = time.monotonic() + 60
        while not self._closed and time.monotonic() < deadline:
            time.sleep(0.1)
        self._cluster.shutdown()


def register() -> None:
    backends.register(NAME, ClusterBackend)
