"""TorchTrainer on the native backend: DDP equivalence, ranks and environment,
dataset shards, checkpoints, restarts after SIGKILL, failures and timeouts."""

from __future__ import annotations

import json
import os

import pytest
import torch

import fedexec
from _train_loops import (
    batch,
    ddp_loop,
    epoch_loop,
    make_model,
    rows_of_pickled,
    shard_loop,
    threads_loop,
)
from fedexec import train
from fedexec.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from fedexec.train.torch import TorchConfig, TorchTrainer


def _read(path):
    with open(path) as f:
        return json.load(f)


def _run_config(tmp_path, **kwargs):
    return RunConfig(storage_path=str(tmp_path / "results"), name="run", **kwargs)


@pytest.mark.timeout(180)
def test_ddp_matches_single_process_training_on_the_combined_batch(native_ex, tmp_path):
    steps = 3
    result = TorchTrainer(ddp_loop, train_loop_config={"steps": steps, "out": str(tmp_path)},
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=_run_config(tmp_path), executor=native_ex).fit()
    ranks = [_read(tmp_path / f"rank{r}.json") for r in range(2)]
    # every rank ends with the same parameters, though each trained on its own data
    assert ranks[0]["params"] == ranks[1]["params"]
    # ... which are those of one process training on both ranks' batches together
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        xs, ys = zip(*(batch(r, step) for r in range(2)))
        loss = torch.nn.functional.mse_loss(model(torch.cat(xs)), torch.cat(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for got, want in zip(ranks[0]["params"], model.parameters()):
        assert torch.allclose(torch.tensor(got), want.detach().flatten(), atol=1e-6)
    # ranks, sizes and the torch.distributed environment
    assert [r["context"] for r in ranks] == [[0, 2, 0, 2, 0], [1, 2, 1, 2, 0]]
    assert [r["env"][:3] for r in ranks] == [["0", "2", "0"], ["1", "2", "1"]]
    assert ranks[0]["env"][3:] == ranks[1]["env"][3:] and ranks[0]["env"][4]
    assert ranks[0]["pid"] != ranks[1]["pid"] != os.getpid()
    # the result: rank 0's metrics of each round
    assert result.error is None
    assert result.metrics["step"] == steps - 1
    assert list(result.metrics_dataframe["step"]) == list(range(steps))
    assert result.checkpoint is None
    assert os.path.exists(os.path.join(result.path, "result.json"))


@pytest.mark.timeout(180)
def test_dataset_shards_are_disjoint_and_cover_the_dataset(tmp_path):
    from fedexec import data

    # the dataset's map tasks need a CPU beside the two workers'
    with fedexec.Executor(backend="native", num_cpus=3) as ex:
        ds = data.range(101, parallelism=10).map(lambda i: {"id": i})
        TorchTrainer(shard_loop, train_loop_config={"epochs": 2, "out": str(tmp_path)},
                     scaling_config=ScalingConfig(num_workers=2), datasets={"train": ds},
                     run_config=_run_config(tmp_path), executor=ex).fit()
        # fit() ended the split's coordinator: rank 0's shard, read again, finds it dead
        rows = ex.submit(rows_of_pickled, (tmp_path / "shard.pkl").read_bytes())
        with pytest.raises(fedexec.ActorDiedError, match=r"killed|died|dead"):
            rows.result(timeout=60)
    for epoch in range(2):
        a, b = (_read(tmp_path / f"rank{r}_epoch{epoch}.json") for r in range(2))
        assert sorted([len(a), len(b)]) == [50, 51]  # balanced to within a row
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(101))  # together the whole: none dropped


@pytest.mark.timeout(180)
def test_workers_forked_with_torch_preloaded_take_their_share_of_threads(tmp_path):
    # torch reads OMP_NUM_THREADS only at import: imported by the node before the
    # worker set it, it would run a thread per core in each of the two workers
    with fedexec.Executor(backend="native", num_cpus=2, worker_preload=["torch"]) as ex:
        result = TorchTrainer(threads_loop, scaling_config=ScalingConfig(num_workers=2),
                              run_config=_run_config(tmp_path), executor=ex).fit()
    assert result.metrics["torch_in_parent"]  # the node had imported it
    assert result.metrics["threads"] == 1


@pytest.mark.timeout(180)
def test_checkpoints_round_trip_and_are_kept_per_config(native_ex, tmp_path):
    config = {"epochs": 4, "out": str(tmp_path)}
    run = _run_config(tmp_path, checkpoint_config=CheckpointConfig(num_to_keep=2))
    result = TorchTrainer(epoch_loop, train_loop_config=config,
                          scaling_config=ScalingConfig(num_workers=2), run_config=run,
                          executor=native_ex).fit()
    kept = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_"))
    assert kept == ["checkpoint_000002", "checkpoint_000003"]
    assert result.checkpoint.path == os.path.join(result.path, "checkpoint_000003")
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "state.pt"))
    assert state["epoch"] == 3
    copy = result.checkpoint.to_directory(str(tmp_path / "copy"))
    assert torch.load(os.path.join(copy, "state.pt"))["epoch"] == 3
    # a new run resumes from it (train.get_checkpoint) and numbers on
    more = TorchTrainer(epoch_loop, train_loop_config={**config, "epochs": 6},
                        scaling_config=ScalingConfig(num_workers=2), run_config=run,
                        resume_from_checkpoint=Checkpoint.from_directory(copy),
                        executor=native_ex).fit()
    assert list(more.metrics_dataframe["epoch"]) == [4, 5]
    assert all(more.metrics_dataframe["resumed"])
    assert more.checkpoint.path.endswith("checkpoint_000005")
    model = make_model()
    model.load_state_dict(torch.load(os.path.join(more.checkpoint.path, "state.pt"))["model"])


@pytest.mark.timeout(240)
def test_a_sigkilled_worker_restarts_the_group_from_the_latest_checkpoint(native_ex, tmp_path):
    config = {"epochs": 4, "out": str(tmp_path), "kill_at": 2}
    result = TorchTrainer(epoch_loop, train_loop_config=config,
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=_run_config(tmp_path,
                                                 failure_config=FailureConfig(max_failures=1)),
                          executor=native_ex).fit()
    killed = _read(tmp_path / "killed")
    assert not fedexec_pid_alive(killed)
    frame = result.metrics_dataframe
    # no epoch lost, none repeated: the restart resumed after epoch 1's checkpoint
    assert list(frame["epoch"]) == [0, 1, 2, 3]
    assert list(frame["resumed"]) == [False, False, True, True]
    assert frame["pid"][1] != frame["pid"][2]  # a fresh group
    assert result.metrics["epoch"] == 3


def fedexec_pid_alive(pid):
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(180)
def test_failures_beyond_max_failures_raise_training_failed_error(native_ex, tmp_path):
    config = {"epochs": 4, "out": str(tmp_path), "kill_at": 1}
    with pytest.raises(TrainingFailedError) as info:
        TorchTrainer(epoch_loop, train_loop_config=config,
                     scaling_config=ScalingConfig(num_workers=2),
                     run_config=_run_config(tmp_path), executor=native_ex).fit()
    assert isinstance(info.value.__cause__, fedexec.exceptions.ActorDiedError)
    assert "worker 1" in str(info.value) and "max_failures=0" in str(info.value)


def _raises_on_rank_1(config):
    if train.get_context().get_world_rank() == 1:
        raise ValueError("bad batch")
    train.report({"ok": 1})


@pytest.mark.timeout(180)
def test_the_cause_is_the_workers_exception_after_retries(native_ex, tmp_path):
    with pytest.raises(TrainingFailedError) as info:
        TorchTrainer(_raises_on_rank_1, scaling_config=ScalingConfig(num_workers=2),
                     run_config=_run_config(tmp_path,
                                            failure_config=FailureConfig(max_failures=1)),
                     executor=native_ex).fit()
    assert isinstance(info.value.__cause__, ValueError)
    assert "ValueError: bad batch" in str(info.value) and "2 failure(s)" in str(info.value)


def _skips_a_collective(config):
    import torch.distributed as dist

    if train.get_context().get_world_rank() == 0:
        dist.all_reduce(torch.ones(1))  # rank 1 never joins
    train.report({"done": 1})


@pytest.mark.timeout(120)
def test_a_hung_collective_times_out_instead_of_hanging(native_ex, tmp_path):
    with pytest.raises(TrainingFailedError) as info:
        TorchTrainer(_skips_a_collective, scaling_config=ScalingConfig(num_workers=2),
                     torch_config=TorchConfig(timeout_s=3), run_config=_run_config(tmp_path),
                     executor=native_ex).fit()
    assert "worker 0" in str(info.value)


def _reports_unevenly(config):
    for _ in range(1 + train.get_context().get_world_rank()):
        train.report({"x": 1})


@pytest.mark.timeout(120)
def test_uneven_reports_are_an_error(native_ex, tmp_path):
    with pytest.raises(TrainingFailedError, match="same number of times"):
        TorchTrainer(_reports_unevenly, scaling_config=ScalingConfig(num_workers=2),
                     run_config=_run_config(tmp_path), executor=native_ex).fit()


@pytest.mark.timeout(120)
def test_one_worker_on_the_local_backend(local_ex, tmp_path):
    result = TorchTrainer(ddp_loop, train_loop_config={"steps": 2, "out": str(tmp_path)},
                          run_config=_run_config(tmp_path), executor=local_ex).fit()
    assert result.metrics["step"] == 1
    assert _read(tmp_path / "rank0.json")["context"] == [0, 1, 0, 1, 0]


def test_several_workers_on_the_local_backend_are_refused_at_the_start(local_ex, tmp_path):
    trainer = TorchTrainer(ddp_loop, scaling_config=ScalingConfig(num_workers=2),
                           run_config=_run_config(tmp_path), executor=local_ex)
    with pytest.raises(fedexec.UnsupportedOnBackendError, match="native"):
        trainer.fit()


def test_session_functions_outside_a_worker_say_so():
    with pytest.raises(RuntimeError, match="train_loop_per_worker"):
        train.report({"x": 1})
    with pytest.raises(RuntimeError, match="train_loop_per_worker"):
        train.get_context()


def test_configs_validate():
    with pytest.raises(ValueError, match="num_workers"):
        ScalingConfig(num_workers=0)
    with pytest.raises(ValueError, match="placement_strategy"):
        ScalingConfig(placement_strategy="NEAR")
    assert ScalingConfig(use_gpu=True, resources_per_worker={"cpu": 2}).worker_bundle() == {
        "CPU": 2.0, "GPU": 1.0}
    with pytest.raises(ValueError, match="backend"):
        TorchConfig(backend="mpi")
    assert train.RunConfig is fedexec.tune.RunConfig


@pytest.mark.timeout(180)
def test_prepare_data_loader_shards_and_reshuffles_each_pass(native_ex, tmp_path):
    from _train_loops import loader_loop

    TorchTrainer(loader_loop, train_loop_config={"n": 32, "out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2), run_config=_run_config(tmp_path),
                 executor=native_ex).fit()
    a, b = (_read(tmp_path / f"loader{r}.json") for r in range(2))
    for epoch in range(2):
        assert len(a["seen"][epoch]) == len(b["seen"][epoch]) == 16
        assert sorted(a["seen"][epoch] + b["seen"][epoch]) == list(range(32))
    assert a["seen"][0] != a["seen"][1]  # the sampler's epoch advanced: a new order
    assert a["device"] == "cpu" and a["dtypes"] == ["torch.float32"]
    assert a["random"] == b["random"]  # enable_reproducibility seeded both alike


@pytest.mark.timeout(120)
def test_mixed_precision_runs_the_forward_in_bf16_on_cpu(native_ex, tmp_path):
    from _train_loops import loader_loop

    TorchTrainer(loader_loop, train_loop_config={"n": 8, "out": str(tmp_path), "amp": True},
                 run_config=_run_config(tmp_path), executor=native_ex).fit()
    assert _read(tmp_path / "loader0.json")["dtypes"] == ["torch.bfloat16"]


def test_a_checkpoint_from_a_worker_without_the_shared_directory_arrives_as_an_archive(
        tmp_path):
    """Rank 0 on a node that does not see the run directory sends its checkpoint
    as bytes; the trainer unpacks it in place (the path a real remote node takes)."""
    from fedexec.train.context import TrainContext
    from fedexec.train.session import Session
    from fedexec.train.storage import RunStorage

    storage = RunStorage(str(tmp_path / "run"), CheckpointConfig(num_to_keep=1))
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"\x00\x01" * 100)
    session = Session(context=TrainContext(), checkpoint=None, datasets={},
                      run_dir=str(tmp_path / "elsewhere"), local=False, next_index=7)
    kind, value = session._persist(Checkpoint.from_directory(str(source)))
    assert kind == "bytes" and value[0] == "checkpoint_000007"
    assert not (tmp_path / "elsewhere").exists()
    kept = storage.add_checkpoint((kind, value), {"loss": 1.0})
    assert kept.path == str(tmp_path / "run" / "checkpoint_000007")
    assert (tmp_path / "run" / "checkpoint_000007" / "weights.bin").read_bytes() == (
        b"\x00\x01" * 100)
    assert storage.next_index == 8
    storage.close()


def test_importing_fedexec_or_fedexec_train_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, fedexec; assert 'fedexec.train' not in sys.modules; "
            "from fedexec.train.torch import TorchTrainer; from fedexec.train.sgd import "
            "TorchTrainer as T; assert 'torch' not in sys.modules, 'torch imported'; "
            "import fedexec.train as t; assert fedexec.train is t")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
