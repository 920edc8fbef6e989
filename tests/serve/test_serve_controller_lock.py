"""The controller answers while it pickles: a deployment's init arguments and
the checkpoint are pickled outside its lock.

The init argument here pickles freely in the driver, but once it was unpickled
somewhere (the controller got its copy) pickling that copy blocks until the test
creates a file: slow pickling, made deterministic without timing.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from fedexec import serve
from fedexec.serve._client import controller_handle

T = 30  # "does not hang" bound of each call


class GatedPickle:
    """Pickles at once where it was made; a copy made by unpickling it blocks in
    ``__reduce__`` (after touching ``<gate>.blocked``) until ``<gate>`` exists."""

    def __init__(self, gate: str, name: str, copies: int = 0) -> None:
        self.gate, self.name, self.copies = gate, name, copies

    def __reduce__(self) -> tuple[Any, ...]:
        if self.copies:
            with open(self.gate + ".blocked", "w"):
                pass
            while not os.path.exists(self.gate):
                time.sleep(0.01)
        return GatedPickle, (self.gate, self.name, self.copies + 1)


@serve.deployment
class Tagged:
    def __init__(self, tag: Any) -> None:
        self.tag = getattr(tag, "name", tag)

    def __call__(self) -> str:
        return str(self.tag)


def _wait_for(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


@pytest.mark.timeout(240)
def test_status_and_other_deployments_answer_while_init_args_pickle(serve_url, tmp_path):
    other = serve.run(Tagged.bind("other"), name="lock_other", route_prefix="/lock_other")
    serve.run(Tagged.bind("v1"), name="lock_slow", route_prefix="/lock_slow")
    gate = str(tmp_path / "gate")
    redeploy_error: list[BaseException] = []

    def redeploy() -> None:
        try:
            serve.run(Tagged.bind(GatedPickle(gate, "v2")), name="lock_slow",
                      route_prefix="/lock_slow")
        except BaseException as exc:  # reported by the test
            redeploy_error.append(exc)

    thread = threading.Thread(target=redeploy, daemon=True)
    thread.start()
    try:
        _wait_for(gate + ".blocked", T)  # the controller is pickling the new init argument
        controller = controller_handle()
        status = controller.status.remote().result(T)
        assert status["applications"]["lock_other"]["status"] == "RUNNING"
        assert other.remote().result(timeout_s=T) == "other"
        assert thread.is_alive()  # the redeploy is still held by the gate
    finally:
        with open(gate, "w"):
            pass
    thread.join(2 * T)
    assert not thread.is_alive() and not redeploy_error, redeploy_error
    handle = serve.get_app_handle("lock_slow")
    assert handle.remote().result(timeout_s=T) == "v2"
    for name in ("lock_slow", "lock_other"):
        serve.delete(name)


@serve.deployment
class Holder:
    def __init__(self, box: list[Any]) -> None:
        self.ref = box[0]  # a ref nested in the init arguments is passed as a ref

    def __call__(self) -> str:
        return str(self.ref.result(timeout=T))


@pytest.mark.timeout(120)
def test_a_ref_among_init_args_stays_readable_after_the_caller_drops_it(serve_url,
                                                                         serve_executor):
    import gc

    ref = serve_executor.put("held by the deployment")
    handle = serve.run(Holder.bind([ref]), name="lock_ref", route_prefix="/lock_ref")
    del ref
    gc.collect()
    time.sleep(1.0)  # a release would reach the owner meanwhile
    assert handle.remote().result(timeout_s=T) == "held by the deployment"
    serve.delete("lock_ref")
