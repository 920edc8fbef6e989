"""TorchTrainer across nodes of a ``fedexec.testing.Cluster``: ranks per node,
and a node killed mid-training."""

from __future__ import annotations

import glob
import json
import os
import threading
import time

import pytest

import fedexec
from _train_loops import ddp_loop, epoch_loop
from fedexec.testing import Cluster
from fedexec.train import FailureConfig, RunConfig, ScalingConfig
from fedexec.train.torch import TorchTrainer


def _read(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_nodes_train_one_model(tmp_path):
    with Cluster(head_num_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
        with fedexec.Executor(address=cluster.address) as ex:
            TorchTrainer(ddp_loop, train_loop_config={"steps": 2, "out": str(tmp_path)},
                         scaling_config=ScalingConfig(num_workers=2, placement_strategy="SPREAD"),
                         run_config=RunConfig(storage_path=str(tmp_path), name="run"),
                         executor=ex).fit()
    ranks = [_read(tmp_path / f"rank{r}.json") for r in range(2)]
    assert ranks[0]["params"] == ranks[1]["params"]
    # one worker per node: each is local rank 0 of its node, node ranks 0 and 1
    assert [r["context"] for r in ranks] == [[0, 2, 0, 1, 0], [1, 2, 0, 1, 1]]
    assert len(nodes) == 2


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_node_killed_mid_training_restarts_the_group_on_the_others(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    config = {"epochs": 5, "out": str(out), "sleep_s": 1.0}
    with Cluster(head_num_cpus=0) as cluster:
        nodes = {n.node_id: n for n in (cluster.add_node(num_cpus=1) for _ in range(3))}
        with fedexec.Executor(address=cluster.address) as ex:
            trainer = TorchTrainer(
                epoch_loop, train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=2, placement_strategy="SPREAD"),
                run_config=RunConfig(storage_path=str(tmp_path), name="run",
                                     failure_config=FailureConfig(max_failures=1)),
                executor=ex)
            outcome: dict = {}
            thread = threading.Thread(target=lambda: outcome.update(result=trainer.fit()))
            thread.start()
            results = tmp_path / "run" / "result.json"
            deadline = time.monotonic() + 200
            while time.monotonic() < deadline and not (
                    results.exists() and results.read_text().count("\n") >= 2):
                time.sleep(0.2)
            (victim_file,) = glob.glob(str(out / "node1_*.json"))
            victim = nodes[_read(victim_file)]
            killed_at = time.time()
            cluster.remove_node(victim)  # SIGKILL of the node manager and its workers
            thread.join(300)
            assert not thread.is_alive()
    frame = outcome["result"].metrics_dataframe
    epochs = list(frame["epoch"])
    assert epochs[-1] == 4 and sorted(set(epochs)) == list(range(5))
    assert epochs == sorted(epochs)  # resumed from the latest checkpoint, none redone twice
    # the second group ran on the two surviving nodes
    later = [_read(p) for p in glob.glob(str(out / "node*_*.json"))
             if os.path.getmtime(p) > killed_at]
    assert len(later) == 2 and victim.node_id not in later and len(set(later)) == 2
    assert os.path.exists(tmp_path / "run" / "checkpoint_000004")
