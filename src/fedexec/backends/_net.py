"""Which IP address a node has as the rest of the cluster sees it."""

from __future__ import annotations

import socket

__all__ = ["host_of", "node_ip"]

_ANY = frozenset({"", "0.0.0.0", "::", "[::]"})


def host_of(address: str | None) -> str | None:
    """The host part of ``"host:port"`` or ``"tcp://host:port"`` (None stays None)."""
    if not address:
        return None
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    return (host if sep and port.isdigit() else rest).strip("[]")


def node_ip(host: str | None) -> str:
    """The IP of a node listening on ``host``: loopback when it listens only
    locally (or not on TCP at all), the host's address when it names one, else
    (a wildcard bind) this machine's address by its hostname."""
    if host is None or host.startswith("127.") or host in ("localhost", "::1"):
        return "127.0.0.1"
    if host in _ANY:
        host = socket.gethostname()
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host
