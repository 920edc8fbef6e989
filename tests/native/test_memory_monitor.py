"""The memory monitor: its policy without processes (which worker dies, when the
monitor looks, how memory is read from a cgroup), then for real: a task that
allocates until the node passes a threshold set just above the memory in use now
is killed and fails with OutOfMemoryError (after its retries), and a task beside
it is left alone; so is one a driver sent straight to a worker leased to it
(leases.py: its worker says the node what it runs). No test allocates more than
~1.2 GiB."""

from __future__ import annotations

import glob
import os
import re
import time

import pytest

import fedexec
from _backend_support import poll_until
from fedexec.backends.native.memory_monitor import (
    ENV_THRESHOLD,
    Candidate,
    Kill,
    MemoryMonitor,
    MemoryReader,
    MemoryUsage,
    pick_victim,
    settings,
)
from fedexec.exceptions import OutOfMemoryError, WorkerCrashedError

GiB = 1 << 30
MiB = 1 << 20


def cand(name: str, started: float, retriable: bool = True, actor: bool = False) -> Candidate:
    return Candidate(f"w-{name}", 1000 + int(started), f"t-{name}", name, started, retriable,
                     actor)


# ------------------------------------------------------------------ policy
def test_the_newest_retriable_task_is_chosen_over_newer_tasks_without_retries():
    found = pick_victim([cand("old", 1), cand("new", 2), cand("newest", 3, retriable=False)])
    assert found is not None and found.name == "new"


def test_without_retriable_tasks_the_newest_task_is_chosen():
    found = pick_victim([cand("a", 1, False), cand("b", 5, False), cand("c", 3, False)])
    assert found is not None and found.name == "b"


def test_actors_are_chosen_last_and_the_newest_of_them_first():
    actors = [cand("actor-old", 8, actor=True), cand("actor-new", 9, actor=True)]
    found = pick_victim([*actors, cand("task", 1, retriable=False)])
    assert found is not None and found.name == "task"
    found = pick_victim(actors)
    assert found is not None and found.name == "actor-new"
    assert pick_victim([]) is None


class FakeMemory:
    def __init__(self, used: int, total: int = 10 * GiB):
        self.used, self.total, self.reads = used, total, 0

    def __call__(self) -> MemoryUsage:
        self.reads += 1
        return MemoryUsage(self.used, self.total, "system")


def test_the_monitor_kills_only_past_the_threshold_and_reads_once_per_interval():
    mem = FakeMemory(used=9 * GiB)
    monitor = MemoryMonitor(threshold=0.95, interval_s=0.25, read=mem)
    asked = []

    def running():
        asked.append(1)
        return [cand("a", 1), cand("b", 2)]

    assert monitor.poll(0.0, running, lambda pid: True) is None  # 90%: fine
    assert asked == []  # the snapshot is not even built
    mem.used = int(9.6 * GiB)
    assert monitor.poll(0.1, running, lambda pid: True) is None  # not time to look yet
    assert mem.reads == 1
    kill = monitor.poll(0.3, running, lambda pid: True)
    assert isinstance(kill, Kill) and kill.victim.name == "b"
    assert kill.usage.used == int(9.6 * GiB) and kill.threshold == 0.95


def test_after_a_kill_the_monitor_waits_until_the_victim_is_gone():
    mem = FakeMemory(used=int(9.9 * GiB))
    monitor = MemoryMonitor(threshold=0.5, interval_s=0.25, read=mem)
    gone: set[int] = set()
    alive = lambda pid: pid not in gone  # noqa: E731
    first = monitor.poll(0.0, lambda: [cand("a", 1), cand("b", 2)], alive)
    assert first is not None and first.victim.name == "b"
    # Its memory is not given back yet: nobody else dies for it.
    assert monitor.poll(0.5, lambda: [cand("a", 1)], alive) is None
    gone.add(first.victim.pid)
    second = monitor.poll(1.0, lambda: [cand("a", 1)], alive)
    assert second is not None and second.victim.name == "a"


def test_interval_zero_turns_the_monitor_off():
    mem = FakeMemory(used=10 * GiB)
    monitor = MemoryMonitor(threshold=0.5, interval_s=0, read=mem)
    assert not monitor.enabled
    assert monitor.poll(5.0, lambda: [cand("a", 1)], lambda pid: True) is None
    assert mem.reads == 0


def test_the_kill_message_names_the_task_the_worker_the_memory_and_the_fix():
    kill = Kill(cand("hog", 3), MemoryUsage(int(7.5 * GiB), 8 * GiB, "cgroup"), 0.9)
    text = kill.describe(rss=int(1.5 * GiB))
    for part in ("'hog'", "t-hog", "pid 1003", "7.50 GiB of 8.00 GiB", "93.8%",
                 "1.50 GiB", "memory_usage_threshold=0.9", "num_cpus", "memory=",
                 ENV_THRESHOLD, "cgroup", "retriable task"):
        assert part in text, (part, text)


# ----------------------------------------------------------------- reading
class Machine:
    total = 16 * GiB
    available = 12 * GiB


def write_tree(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cgroup_v2_limit_is_used_minus_inactive_file_cache(tmp_path):
    write_tree(tmp_path, {
        "proc": "0::/job/7\n",
        "fs/job/7/memory.max": f"{2 * GiB}\n",
        "fs/job/7/memory.current": f"{GiB + 300 * MiB}\n",
        "fs/job/7/memory.stat": f"anon 1\ninactive_file {300 * MiB}\nactive_file 5\n",
    })
    usage = MemoryReader(str(tmp_path / "proc"), str(tmp_path / "fs"), system=Machine)()
    assert usage == MemoryUsage(GiB, 2 * GiB, "cgroup")


def test_a_cgroup_v1_memory_controller_is_read_inside_a_namespace(tmp_path):
    # In a cgroup namespace the path is "/" and the process's cgroup is the mount root.
    write_tree(tmp_path, {
        "proc": "5:cpu:/\n4:memory:/\n0::/\n",
        "fs/memory/memory.limit_in_bytes": f"{4 * GiB}\n",
        "fs/memory/memory.usage_in_bytes": f"{3 * GiB}\n",
        "fs/memory/memory.stat": f"cache 9\ntotal_inactive_file {GiB}\n",
    })
    usage = MemoryReader(str(tmp_path / "proc"), str(tmp_path / "fs"), system=Machine)()
    assert usage == MemoryUsage(2 * GiB, 4 * GiB, "cgroup")


@pytest.mark.parametrize("limit", ["max", str(1 << 62), str(16 * GiB)])
def test_without_a_limit_below_the_machine_the_machine_memory_is_used(tmp_path, limit):
    write_tree(tmp_path, {
        "proc": "0::/a\n",
        "fs/a/memory.max": limit + "\n",
        "fs/a/memory.current": f"{GiB}\n",
        "fs/a/memory.stat": "inactive_file 0\n",
    })
    usage = MemoryReader(str(tmp_path / "proc"), str(tmp_path / "fs"), system=Machine)()
    assert usage == MemoryUsage(4 * GiB, 16 * GiB, "system")
    no_cgroup = MemoryReader(str(tmp_path / "missing"), str(tmp_path / "fs"), system=Machine)
    assert no_cgroup() == usage


# ---------------------------------------------------------------- settings
def test_settings_come_from_options_then_the_environment_then_defaults():
    assert settings({}, {}) == {"memory_usage_threshold": 0.95,
                                "memory_monitor_interval_s": 0.25}
    assert settings({}, {ENV_THRESHOLD: "0.8"})["memory_usage_threshold"] == 0.8
    both = settings({"memory_usage_threshold": 0.7, "memory_monitor_interval_s": 0},
                    {ENV_THRESHOLD: "0.8"})
    assert both == {"memory_usage_threshold": 0.7, "memory_monitor_interval_s": 0.0}


@pytest.mark.parametrize("options, env, names", [
    ({"memory_usage_threshold": 1.5}, {}, "memory_usage_threshold"),
    ({"memory_usage_threshold": 0}, {}, "memory_usage_threshold"),
    ({}, {ENV_THRESHOLD: "lots"}, ENV_THRESHOLD),
    ({}, {ENV_THRESHOLD: "nan"}, ENV_THRESHOLD),
    ({"memory_monitor_interval_s": -1}, {}, "memory_monitor_interval_s"),
    ({"memory_monitor_interval_s": "soon"}, {}, "memory_monitor_interval_s"),
])
def test_bad_settings_are_refused_naming_where_they_came_from(options, env, names):
    with pytest.raises(ValueError, match=names):
        settings(options, env)


def test_the_environment_is_read_when_a_runtime_starts_not_at_import(monkeypatch):
    monkeypatch.setenv(ENV_THRESHOLD, "2.0")
    with pytest.raises(ValueError, match=ENV_THRESHOLD):
        fedexec.Executor("native", num_cpus=1)


# ------------------------------------------------------------ end to end
MARGIN = 600 * MiB  # the threshold sits this far above the memory in use when a test starts
PAST = 256 * MiB    # the hog allocates until the memory in use is this far past it
SPARE = 512 * MiB   # ... or until only this much is left (it never gets there)


def hog(marker_dir: str, threshold: float) -> str:
    """Allocate (and touch) memory gradually until the machine (or cgroup), read as
    the monitor reads it, is PAST over ``threshold``, then hold it a while: measured,
    not a fixed amount, so other processes freeing memory meanwhile (CI flakes at
    fixed 1200 and 2000 MiB, with other test runs beside them) cannot keep it under."""
    from fedexec.backends.native.memory_monitor import MemoryReader

    open(os.path.join(marker_dir, f"attempt-{os.getpid()}"), "w").close()
    read = MemoryReader()
    held = []
    while True:
        usage = read()
        if usage.used >= threshold * usage.total + PAST or usage.total - usage.used < SPARE:
            break
        held.append(b"\x01" * (16 * MiB))
        time.sleep(0.02)
    time.sleep(5)
    return "survived"


def bystander(marker_dir: str, stop_file: str) -> int:
    open(os.path.join(marker_dir, "bystander-started"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()


def low_threshold() -> float:
    """A threshold just above what the machine (or cgroup) uses with a node of the
    test's shape running (its node process and warm workers counted), high enough
    that other processes' ups and downs, and a worker spawned to replace a killed
    one, should not reach it."""
    read = MemoryReader()
    samples = []
    with fedexec.Executor("native", num_cpus=2, memory_monitor_interval_s=0) as ex:
        # Two tasks at once on two CPUs: both workers are spawned and have imported.
        list(ex.map(time.sleep, [0.5, 0.5], timeout=60))
        for _ in range(5):
            samples.append(read())
            time.sleep(0.1)
    now, usage = max(u.used for u in samples), samples[-1]
    if usage.total - now < MARGIN + PAST + SPARE + 1024 * MiB:
        pytest.skip(f"too little free memory for the test ({(usage.total - now) >> 20} MiB)")
    return (now + MARGIN) / usage.total


def wait_for(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def through_a_lease(ex: fedexec.Executor, leases: bool) -> int:
    """With ``leases``, wait until this driver's tasks get a leased worker (the
    node's workers may still be starting): how many it sent to one so far."""
    if not leases:
        return 0
    sent = lambda: ex._backend._leases.sent  # noqa: E731
    assert poll_until(lambda: ex.get(ex.submit(abs, -1), timeout=60) and sent() > 0,
                      timeout=60), "no lease was granted"
    return sent()


@pytest.fixture(params=[False, True], ids=["hub", "leased"])
def leases(request, monkeypatch):
    """The hog goes through the node manager, or straight to a leased worker."""
    monkeypatch.setenv("FEDEXEC_TASK_LEASES", "1" if request.param else "0")
    return request.param


@pytest.mark.timeout(120)
def test_a_task_past_the_threshold_is_killed_with_out_of_memory_error(tmp_path, capfd, leases):
    threshold = low_threshold()
    with fedexec.Executor("native", num_cpus=2, memory_usage_threshold=threshold,
                          memory_monitor_interval_s=0.1) as ex:
        sent = through_a_lease(ex, leases)
        ref = ex.options(max_retries=0, name="hog").submit(hog, str(tmp_path), threshold)
        if leases:  # (sent once its lease is granted)
            assert poll_until(lambda: ex._backend._leases.sent == sent + 1, timeout=30)
        with pytest.raises(OutOfMemoryError) as info:
            ref.result(timeout=60)
        assert not isinstance(info.value, WorkerCrashedError)
        text = str(info.value)
        assert "'hog'" in text and "memory_usage_threshold" in text and "max_retries" in text
        attempts = glob.glob(str(tmp_path / "attempt-*"))
        assert len(attempts) == 1
        pid = int(attempts[0].rsplit("-", 1)[1])
        assert f"pid {pid}" in text
        assert ex.submit(sum, [1, 2]).result(timeout=30) == 3  # the node carries on
    log = capfd.readouterr().err
    assert "memory monitor (node" in log and f"killed worker pid {pid}" in log
    assert "'hog'" in log and "OutOfMemoryError" in log


@pytest.mark.timeout(150)
def test_an_oom_kill_uses_a_retry_and_a_task_beside_it_is_not_harmed(tmp_path, capfd, leases):
    stop = str(tmp_path / "stop")
    threshold = low_threshold()
    with fedexec.Executor("native", num_cpus=2, memory_usage_threshold=threshold,
                          memory_monitor_interval_s=0.1) as ex:
        sent = through_a_lease(ex, leases)
        calm = ex.options(max_retries=0).submit(bystander, str(tmp_path), stop)
        wait_for(str(tmp_path / "bystander-started"))
        ref = ex.options(max_retries=1, name="hog").submit(hog, str(tmp_path), threshold)
        if leases:  # calm and hog (its retry goes through the node manager)
            assert poll_until(lambda: ex._backend._leases.sent == sent + 2, timeout=30)
        try:
            with pytest.raises(OutOfMemoryError, match="'hog'"):
                ref.result(timeout=90)
        finally:
            open(stop, "w").close()
        calm_pid = calm.result(timeout=30)  # ran to the end on its first worker
        assert not calm.exception()
    # Tried, killed, retried, killed: the monitor says so for each kill (a retry may
    # be killed before it wrote its marker, so the log is what counts the kills).
    kills = re.findall(r"killed worker pid (\d+), (retrying|failing)", capfd.readouterr().err)
    assert [how for _, how in kills] == ["retrying", "failing"], kills
    killed = {int(pid) for pid, _ in kills}
    attempts = {int(p.rsplit("-", 1)[1]) for p in glob.glob(str(tmp_path / "attempt-*"))}
    assert attempts and attempts <= killed and calm_pid not in killed
