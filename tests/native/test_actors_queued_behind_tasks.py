"""Actors that wait for a CPU while tasks of the same shape keep the node busy: the
node manager must never pipeline a waiting actor onto a busy task lease (it did,
and died on it); every actor starts once the tasks let go of the CPUs."""

from __future__ import annotations

import time

import pytest

import fedexec

T = 60


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return 1


class Echo:
    def echo(self, x: int) -> int:
        return x


@pytest.mark.timeout(180)
def test_more_actors_than_cpus_queued_behind_running_tasks_all_serve_calls():
    ex = fedexec.Executor("native", num_cpus=2)
    try:
        running = [ex.submit(nap, 2.0) for _ in range(2)]  # both CPUs taken
        # Actors (1 CPU to be created, 0 once alive) queue behind the running tasks,
        # with more one-CPU tasks behind them: a queue deep enough to pipeline.
        actors = [ex.actor(Echo) for _ in range(3)]
        calls = [a.echo.remote(i) for i, a in enumerate(actors)]
        more = [ex.submit(nap, 0.2) for _ in range(6)]
        assert ex.get(calls, timeout=T) == [0, 1, 2]
        assert ex.get(running + more, timeout=T) == [1] * 8
        # The node is alive: actors and tasks still answer.
        assert ex.get([a.echo.remote(7) for a in actors], timeout=T) == [7, 7, 7]
        assert ex.get(ex.submit(pow, 2, 5), timeout=T) == 32
    finally:
        ex.shutdown()
