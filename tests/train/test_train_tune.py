"""A trainer is a tune trainable: ``Tuner(trainer, param_space={"train_loop_config": ...})``."""

from __future__ import annotations

import os

import pytest

from _train_loops import epoch_loop
from fedexec import tune
from fedexec.train import ScalingConfig
from fedexec.train.torch import TorchTrainer


@pytest.mark.timeout(300)
def test_tuner_runs_a_trainer_per_trial_with_its_workers(native_ex, tmp_path):
    trainer = TorchTrainer(epoch_loop, train_loop_config={"epochs": 2, "out": str(tmp_path)},
                           scaling_config=ScalingConfig(num_workers=1))
    grid = tune.Tuner(
        trainer, param_space={"train_loop_config": {"epochs": tune.grid_search([1, 3])}},
        tune_config=tune.TuneConfig(metric="epoch", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "exp"), name="exp", verbose=0),
        executor=native_ex).fit()
    assert grid.num_errors == 0 and len(grid) == 2
    by_epochs = sorted(grid, key=lambda r: r.metrics["epoch"])
    assert [r.metrics["epoch"] for r in by_epochs] == [0, 2]
    assert [r.metrics["training_iteration"] for r in by_epochs] == [1, 3]
    best = grid.get_best_result()
    assert best.metrics["epoch"] == 2
    assert best.checkpoint is not None
    assert os.path.exists(os.path.join(best.checkpoint.path, "state.pt"))


def test_a_trainer_asks_for_its_workers_and_no_cpu_of_its_own():
    from fedexec.tune.trainable.registry import resolve

    trainer = TorchTrainer(epoch_loop, scaling_config=ScalingConfig(
        num_workers=3, resources_per_worker={"CPU": 2}, placement_strategy="SPREAD"))
    request = resolve(trainer).resources_for({})
    assert request.bundles == [{"CPU": 0.0}] + [{"CPU": 2.0}] * 3
    assert request.strategy == "SPREAD"
    assert request.required_resources == {"CPU": 6.0}
