"""The training worker actor: runs the loop (in one of its calls), answers the trainer.

Calls (all from the trainer): ``info`` (node, address, GPUs, pid), ``free_port``,
``execute(fn, *args)`` (setup such as forming the process group), ``run``
(the loop, until it ends), ``poll`` (the next result; releases the previous one:
see :mod:`.session`), ``stop``. The actor runs three calls at once, so ``run``
and ``poll`` (which wait) never block each other or ``stop``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import fedexec
from fedexec.tune.checkpoint import Checkpoint, locate

from . import session as _session

__all__ = ["TrainWorker"]

#: seconds one ``poll`` call waits in the actor before answering "wait"
POLL_S = 5.0


class TrainWorker:
    """One rank of a training group (an actor)."""

    def __init__(self, env_defaults: dict[str, str] | None = None,
                 preload: tuple[str, ...] = ()) -> None:
        """``env_defaults`` go into the environment where it has no value;
        ``preload`` modules (torch) start importing now, in the background, so
        the import overlaps the rest of the group's setup."""
        for key, value in (env_defaults or {}).items():
            os.environ.setdefault(key, value)
        _apply_thread_count()
        if preload:
            threading.Thread(target=_preload, args=(preload,), daemon=True,
                             name="fedexec-train-preload").start()
        self._channel = _session.Channel()  # one run per actor: groups are not reused

    def info(self, marker: tuple[str, str]) -> dict[str, Any]:
        """Where this worker runs. ``marker`` is ``(file, token)``: a file the
        trainer wrote in the run directory; ``shared_fs`` says whether this
        worker reads the token there (then it shares the trainer's file system
        and writes checkpoints straight into the run directory)."""
        ctx = fedexec.get_runtime_context()
        return {"shared_fs": _sees(marker), "node_id": ctx.get_node_id(), "ip": ctx.get_node_ip_address(),
                "gpu_ids": [str(g) for g in ctx.get_gpu_ids()], "pid": os.getpid(),
                "hostname": socket.gethostname()}

    def free_port(self) -> int:
        """A TCP port free on this node (for ``MASTER_PORT``)."""
        with socket.socket() as sock:
            sock.bind(("", 0))
            return int(sock.getsockname()[1])

    def set_env(self, env: dict[str, str]) -> None:
        """Add ``env`` to this worker process's environment."""
        os.environ.update(env)

    def execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in this worker."""
        return fn(*args, **kwargs)

    def run(self, loop: Callable[..., Any], config: dict[str, Any] | None, *,
            context: Any, checkpoint: Any, datasets: dict[str, Any], run_dir: str,
            local: bool, next_index: int) -> None:
        """Run ``loop(config)`` (or ``loop()``) with a new session, in this call's
        thread (so the loop sees the actor's runtime context: its node, its
        GPUs). Returns when the loop ends; its results and its error reach the
        trainer through ``poll``.

        ``checkpoint`` is ``("path", dir)``, ``("bytes", archive)`` or None;
        ``local``: this worker shares the run directory (see ``info``).
        """
        where = locate(checkpoint)
        session = _session.Session(
            context=context, checkpoint=Checkpoint(where) if where else None,
            datasets=datasets, run_dir=run_dir, local=local, next_index=next_index,
            channel=self._channel)
        _session.activate(session)
        try:
            loop(config) if _takes_config(loop) else loop()
        except _session.Stopped:
            return
        except BaseException as exc:  # reaches the trainer through poll()
            self._channel.put("error", exc)
            return
        finally:
            _session.activate(None)
        self._channel.put("done", None)

    def poll(self, timeout: float = POLL_S) -> tuple[str, Any]:
        """``("report", (metrics, checkpoint))``, ``("done", None)``, or
        ``("wait", None)`` when nothing came within ``timeout`` seconds.
        Releases the worker from its previous report.

        Raises:
            the loop's exception, when it raised.
        """
        item = self._channel.take(timeout)
        if item is None:
            return ("wait", None)
        if item[0] == "error":
            raise item[1]
        return item

    def stop(self) -> None:
        """End the loop at its next report (the trainer is done with it)."""
        self._channel.stop()


def _apply_thread_count() -> None:
    """Give torch ``OMP_NUM_THREADS`` math threads when it was imported before
    that was set (a worker forked with torch preloaded, ``worker_preload``):
    torch reads the variable only at import, and two workers with a thread per
    core each would oversubscribe the node."""
    torch = sys.modules.get("torch")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def _preload(modules: tuple[str, ...]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # the real import, later, reports it
            pass


def _sees(marker: tuple[str, str]) -> bool:
    try:
        with open(marker[0]) as f:
            return f.read() == marker[1]
    except OSError:
        return False


def _takes_config(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)
