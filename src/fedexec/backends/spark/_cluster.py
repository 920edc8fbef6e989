"""Where things run: node ids, the driver's address, the executors' hosts."""

from __future__ import annotations

import functools
import hashlib
import socket
from typing import Any

from . import _session as session

__all__ = ["bind_host", "driver_host", "executor_hosts", "node_id", "resolve"]


def node_id(app_id: str, host: str) -> str:
    """The node id of ``host`` in Spark application ``app_id``."""
    return hashlib.sha1(f"{app_id}|{host}".encode()).hexdigest()[:28]


def driver_host(sc: Any) -> str:
    """The host executors reach the driver at."""
    return str(sc.getConf().get("spark.driver.host") or socket.gethostname())


def bind_host(sc: Any) -> str:
    """The address the lease listener binds to (on a cluster)."""
    return str(sc.getConf().get("spark.driver.bindAddress") or "0.0.0.0")


def executor_hosts(sc: Any) -> dict[str, int]:
    """``{host: cores}`` of the Spark executors (the driver's own entry only when
    there is no other), from Spark's status store."""
    return session.executor_cores(sc) or {driver_host(sc): max(1, int(sc.defaultParallelism))}


@functools.lru_cache(maxsize=256)
def resolve(host: str) -> str:
    """``host``'s IP address (``host`` itself if it does not resolve)."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host
