"""``worker_preload``: the node imports the named modules once, before it forks
its workers, so every worker starts with them imported; bad values are refused
before anything starts."""

import os
import sys

import pytest

import fedexec

PROBE = """
import os
IMPORTED_IN = os.getpid()
with open({log!r}, "a") as f:
    f.write(f"{{IMPORTED_IN}}\\n")
"""


def where_imported(name):
    module = __import__(name)
    return os.getpid(), os.getppid(), module.IMPORTED_IN


@pytest.mark.timeout(120)
def test_workers_start_with_the_preloaded_module_imported_once_by_the_node(tmp_path, monkeypatch):
    log = tmp_path / "imports.log"
    (tmp_path / "fedexec_preload_probe.py").write_text(PROBE.format(log=str(log)))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fedexec_preload_probe", None)
    with fedexec.Executor(backend="native", num_cpus=2,
                          worker_preload=["fedexec_preload_probe"]) as ex:
        seen = ex.get([ex.submit(where_imported, "fedexec_preload_probe") for _ in range(8)])
    workers = {pid for pid, _, _ in seen}
    parents = {parent for _, parent, _ in seen}
    importers = {imported for _, _, imported in seen}
    assert len(importers) == 1  # one import, inherited by every worker
    assert importers == parents  # made by the node that forked them
    assert not importers & workers and os.getpid() not in importers
    assert log.read_text().split() == [str(p) for p in importers]  # imported exactly once


@pytest.mark.parametrize("value, match", [
    ("torch", "list of module names"),
    ([""], "list of module names"),
    (["fedexec_no_such_module_xyz"], "fedexec_no_such_module_xyz.*not importable"),
])
def test_a_bad_worker_preload_is_refused_before_anything_starts(value, match):
    with pytest.raises(ValueError, match=match):
        fedexec.Executor(backend="native", worker_preload=value)
