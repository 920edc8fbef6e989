"""Helpers shared by the conformance tests.

Tasks here block and signal through files, not through threading primitives, so
the same test works whether a backend runs tasks in threads of this process or
in other processes on this machine. A :class:`Gate` is a pair of files: a task
touches ``started`` when it begins and waits until ``release`` exists. The
``gates`` fixture (``gates = gates_fixture()`` in a test module) opens every gate
it made at teardown, so no task is left blocked after a test, pass or fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _backend_support import poll_until  # noqa: F401  (re-exported for the tests here)

POLL_S = 0.01
#: The longest any helper task blocks; tests use ``timeout=`` shorter than this
#: only where a timeout is the behaviour under test.
MAX_BLOCK_S = 30.0


# --------------------------------------------------------------------------- tasks
def identity(x: Any) -> Any:
    return x


def add(a: Any, b: Any) -> Any:
    return a + b


def square(x: int) -> int:
    return x * x


def fail(message: str = "boom", exc_type: type[BaseException] = ValueError) -> None:
    raise exc_type(message)


def touch(path: str | os.PathLike[str]) -> str:
    Path(path).touch()
    return str(path)


def wait_for_path(path: str | os.PathLike[str], timeout: float = MAX_BLOCK_S) -> bool:
    """True once ``path`` exists; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def block(
    release: str, value: Any = None, started: str | None = None, timeout: float = MAX_BLOCK_S
) -> Any:
    """Touch ``started``, wait for ``release``, return ``value``."""
    if started is not None:
        touch(started)
    if not wait_for_path(release, timeout):
        raise TimeoutError(f"gate {release} was never opened")
    return value


def spin(started: str, release: str, interrupted: str | None = None) -> str:
    """Loop on short sleeps (interruptible between bytecodes) until ``release``
    exists or 30 s pass; on ``KeyboardInterrupt`` touch ``interrupted`` and re-raise.

    ``started`` is touched inside the ``try``: a cancel prompted by it may interrupt
    the thread right after, before the loop is entered."""
    try:
        touch(started)
        for _ in range(600):
            if os.path.exists(release):
                return "released"
            time.sleep(0.05)
        return "ran to the end"
    except KeyboardInterrupt:
        if interrupted is not None:
            touch(interrupted)
        raise


def record_attempt(directory: str) -> int:
    """Count this call in ``directory`` (atomically, across processes); its 0-based number."""
    n = 0
    while True:
        try:
            fd = os.open(os.path.join(directory, f"attempt-{n}"), os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        return n


def attempts(directory: str) -> int:
    return sum(name.startswith("attempt-") for name in os.listdir(directory))


def flaky(directory: str, failures: int, exc_type: type[BaseException] = ValueError) -> int:
    """Raise ``exc_type`` on the first ``failures`` calls, then return the call number."""
    n = record_attempt(directory)
    if n < failures:
        raise exc_type(f"attempt {n} fails")
    return n


def rendezvous(directory: str, me: int, n: int, timeout: float = 10.0) -> bool:
    """Arrive, then wait for ``n`` arrivals: True if all ``n`` were there together
    (so they ran concurrently), False after ``timeout``."""
    Path(directory, f"arrived-{me}").touch()
    deadline = time.monotonic() + timeout
    while sum(name.startswith("arrived-") for name in os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def probe_concurrency(directory: str, me: int, hold: float = 0.15) -> int:
    """Mark this task as running for ``hold`` seconds; how many were running at once."""
    mine = Path(directory, f"running-{me}")
    mine.touch()
    seen = 0
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        seen = max(seen, sum(name.startswith("running-") for name in os.listdir(directory)))
        time.sleep(POLL_S)
    mine.unlink()
    return seen


# --------------------------------------------------------------------------- gates
class Gate:
    """A ``release`` file that tasks wait for and ``started``/marker files they touch."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.release = str(directory / "release")
        self.started = str(directory / "started")

    def marker(self, name: str) -> str:
        return str(self.dir / name)

    def open(self) -> None:
        touch(self.release)

    def wait_started(self, name: str | None = None, timeout: float = MAX_BLOCK_S) -> None:
        path = self.started if name is None else self.marker(name)
        assert wait_for_path(path, timeout), f"the task never touched {path}"


def gates_fixture() -> Any:
    """A ``gates`` fixture: ``gates()`` makes a :class:`Gate`, all opened at teardown."""

    @pytest.fixture
    def gates(tmp_path: Path) -> Iterator[Callable[[], Gate]]:
        made: list[Gate] = []

        def make() -> Gate:
            gate = Gate(tmp_path / f"gate{len(made)}")
            made.append(gate)
            return gate

        yield make
        for gate in made:
            gate.open()
        # Give tasks that were blocked on a gate a moment to notice and finish, so
        # they do not hold the shared executor's CPUs in the next test.
        time.sleep(3 * POLL_S)

    return gates
