"""The fedexec command, run as a user would."""

import json
import os
import subprocess
import sys

from fedexec.cli import format_bytes, format_status, format_table


def run(*args):
    return subprocess.run([sys.executable, "-m", "fedexec", *args], capture_output=True,
                          text=True, timeout=60)


def test_version_and_backends_are_printed():
    out = run()
    assert out.returncode == 0
    assert "fedexec 0." in out.stdout and "local" in out.stdout


def test_backends_as_json():
    out = run("backends", "--format", "json")
    assert out.returncode == 0
    assert "actors" in json.loads(out.stdout)["local"]


def test_start_refuses_a_worker_preload_that_is_not_importable(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fedexec", "start", "--head", "--port", "0",
                          "--worker-preload", "fedexec_no_such_module_xyz"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FEDEXEC_HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "fedexec_no_such_module_xyz" in out.stderr and "not importable" in out.stderr


def test_version_flag():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("fedexec ")


# ------------------------------------------------- status / list formatting


def test_bytes_are_written_for_people():
    assert [format_bytes(n) for n in (0, 512, 1024, 1536, 16 << 20, 3 << 30, None)] == \
        ["0 B", "512 B", "1.0 KiB", "1.5 KiB", "16.0 MiB", "3.0 GiB", "-"]


def test_a_table_aligns_its_columns_and_writes_sizes_in_units():
    rows = [{"node_id": "aa", "object_id": "o1", "size": 8_000_121, "holders": 1},
            {"node_id": "bbbb", "object_id": "o2", "size": 100, "holders": 12}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["NODE_ID", "OBJECT_ID", "SIZE", "HOLDERS"]
    assert lines[1].split() == ["aa", "o1", "7.6", "MiB", "1"]
    assert lines[2].split() == ["bbbb", "o2", "100", "B", "12"]
    starts = {line.index("o") for line in lines[1:]}
    assert len(starts) == 1 and lines[0].index("OBJECT_ID") in starts  # aligned
    assert "RESOURCES" not in format_table([{"a": 1, "resources": {}}], skip=("resources",))


def test_times_are_written_as_dates():
    import time

    when = time.mktime((2026, 12, 6, 19, 5, 7, 0, 0, -1)) + 0.25
    table = format_table([{"task_id": "t", "end_time": when}, {"task_id": "u"}])
    assert table.splitlines()[1].split() == ["t", "2026-12-06", "19:05:07"]


def _status():
    store = {"used_bytes": 3 << 20, "capacity": 1 << 30, "num_objects": 2,
             "num_spilled": 0, "spilled_bytes": 0}
    alive = {"node_id": "n1", "address": "127.0.0.1:1", "alive": True, "is_head": True,
             "state": "alive", "tasks": 4, "queued_tasks": 1, "actors": 2, "objects": 7,
             "workers": 3, "store": store}
    dead = {"node_id": "n2", "address": "127.0.0.1:2", "alive": False, "is_head": False,
            "state": "dead"}
    return {"nodes": [alive, dead], "total": {"CPU": 4.0, "memory": float(2 << 30)},
            "available": {"CPU": 1.5, "memory": float(1 << 30)}, "tasks": 4,
            "queued_tasks": 1, "actors": 2, "objects": 7, "workers": 3, "store": store,
            "missing": {"n2": "NodeDiedError: the node is dead"}}


def test_status_shows_every_node_the_dead_one_too_and_totals_in_units():
    text = format_status(_status())
    assert "nodes: 2 (1 alive)" in text
    head = next(line for line in text.splitlines() if "n1 (head)" in line)
    assert head.split()[3:9] == ["alive", "4", "1", "2", "7", "3"]
    assert "3.0 MiB / 1.0 GiB" in head
    dead = next(line for line in text.splitlines() if line.split()[0] == "n2")
    assert dead.split()[2:] == ["dead", "-", "-", "-", "-", "-", "-"]
    assert "node n2 is not counted below: NodeDiedError: the node is dead" in text
    assert "CPU    2.5 / 4" in text and "memory 1.0 GiB / 2.0 GiB" in text  # aligned
    assert "object store: 3.0 MiB / 1.0 GiB in 2 objects" in text
    assert "tasks: 4 unfinished, 1 queued for resources; actors: 2; workers: 3" in text
