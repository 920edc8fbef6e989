"""Modern data-parallel training: ``TorchTrainer(train_loop_per_worker)`` on two
workers, a ``fedexec.data`` dataset streamed into them, a checkpoint per epoch,
and the result read back.

    python examples/train_ddp.py

Results (checkpoint_NNNNNN/ directories, result.json) go to
``~/fedexec_results/train_ddp``.
"""

import os
import tempfile

import numpy as np
import torch
from torch import nn

import fedexec
from fedexec import data, train
from fedexec.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from fedexec.train.torch import TorchTrainer, prepare_model

TRUE_W = np.array([2.0, -3.0, 0.5, 1.0], dtype=np.float32)


def make_dataset(n=4096):
    """Rows {"x": 4 features, "y": a noisy linear function of them}, made by tasks."""
    def add_features(batch):
        rng = np.random.default_rng(int(batch["id"][0]))
        x = rng.normal(size=(len(batch["id"]), 4)).astype(np.float32)
        y = x @ TRUE_W + 0.1 * rng.normal(size=len(x)).astype(np.float32)
        return {"x": x, "y": y.astype(np.float32)}

    return data.range_table(n, parallelism=8).map_batches(add_features)


def train_loop_per_worker(config):
    model = prepare_model(nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint:  # resume (after a worker failure) from the latest checkpoint
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"))
        model.module.load_state_dict(state["model"]) if hasattr(model, "module") else (
            model.load_state_dict(state["model"]))
        start = state["epoch"] + 1
    shard = train.get_dataset_shard("train")  # this worker's half, streamed
    for epoch in range(start, config["epochs"]):
        total, rows = 0.0, 0
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"]):
            loss = nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, rows = total + loss.item() * len(batch["y"]), rows + len(batch["y"])
        with tempfile.TemporaryDirectory() as d:
            if train.get_context().get_world_rank() == 0:
                raw = model.module if hasattr(model, "module") else model
                torch.save({"model": raw.state_dict(), "epoch": epoch},
                           os.path.join(d, "model.pt"))
            train.report({"epoch": epoch, "loss": total / rows},
                         checkpoint=Checkpoint.from_directory(d))


def main():
    fedexec.init(num_cpus=3)  # two workers, and a CPU for the dataset's tasks
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"lr": 0.05, "epochs": 4, "batch_size": 64},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="train_ddp", checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": make_dataset()},
    )
    result = trainer.fit()
    print(result.metrics_dataframe[["epoch", "loss"]])
    with result.checkpoint.as_directory() as d:
        weights = torch.load(os.path.join(d, "model.pt"))["model"]["weight"]
    print("learned weights:", weights.numpy().round(2), "true:", TRUE_W)
    assert result.metrics["loss"] < 0.05, result.metrics
    fedexec.shutdown()


if __name__ == "__main__":
    main()
