"""Training loops for the train tests (importable by worker processes: ``tests`` is on the path)."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time

import cloudpickle
import torch

import fedexec
from fedexec import train
from fedexec.train import Checkpoint
from fedexec.train.torch import prepare_model


def dump(directory: str, name: str, value: object) -> None:
    """Write ``value`` as JSON to ``directory/name`` (atomically)."""
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s batch at ``step``: different on every rank."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)


def ddp_loop(config: dict) -> None:
    """A few SGD steps on rank-specific batches; every rank dumps its parameters."""
    ctx = train.get_context()
    model = prepare_model(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(config["steps"]):
        x, y = batch(ctx.get_world_rank(), step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train.report({"loss": loss.item(), "step": step})
    params = [p.detach().flatten().tolist() for p in model.parameters()]
    dump(config["out"], f"rank{ctx.get_world_rank()}.json",
         {"params": params, "context": [ctx.get_world_rank(), ctx.get_world_size(),
                                        ctx.get_local_rank(), ctx.get_local_world_size(),
                                        ctx.get_node_rank()],
          "env": [os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                              "MASTER_ADDR", "MASTER_PORT")],
          "pid": os.getpid()})


def epoch_loop(config: dict) -> None:
    """Epochs resumed from the latest checkpoint; each reports one checkpoint.
    ``kill_at``: rank 1 SIGKILLs its own process as that epoch begins, once
    (a marker file in ``out`` remembers it did)."""
    ctx = train.get_context()
    model = prepare_model(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"))
        (model.module if hasattr(model, "module") else model).load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    marker = os.path.join(config["out"], "killed")
    node = fedexec.get_runtime_context().get_node_id()
    dump(config["out"], f"node{ctx.get_world_rank()}_{os.getpid()}.json", node)
    for epoch in range(start, config["epochs"]):
        time.sleep(config.get("sleep_s", 0))
        if (epoch == config.get("kill_at") and ctx.get_world_rank() == 1
                and not os.path.exists(marker)):
            dump(config["out"], "killed", os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch(ctx.get_world_rank(), epoch)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with tempfile.TemporaryDirectory() as d:
            if ctx.get_world_rank() == 0:
                raw = model.module if hasattr(model, "module") else model
                torch.save({"model": raw.state_dict(), "opt": opt.state_dict(),
                            "epoch": epoch}, os.path.join(d, "state.pt"))
            train.report({"epoch": epoch, "loss": loss.item(), "pid": os.getpid(),
                          "resumed": checkpoint is not None},
                         checkpoint=Checkpoint.from_directory(d))


def shard_loop(config: dict) -> None:
    """Each rank dumps the ids of its shard, for ``config["epochs"]`` passes."""
    ctx = train.get_context()
    shard = train.get_dataset_shard("train")
    if ctx.get_world_rank() == 0:  # for the test to find the split's coordinator after fit
        with open(os.path.join(config["out"], "shard.pkl"), "wb") as f:
            f.write(cloudpickle.dumps(shard))
    for epoch in range(config["epochs"]):
        ids = []
        for batch_ in shard.iter_torch_batches(batch_size=7):
            ids.extend(int(i) for i in batch_["id"])
        dump(config["out"], f"rank{ctx.get_world_rank()}_epoch{epoch}.json", ids)
        train.report({"epoch": epoch, "rows": len(ids)})


def rows_of_pickled(shard: bytes) -> list:
    """The rows of a pickled dataset shard (read in a task: its handles need a runtime)."""
    return list(cloudpickle.loads(shard).iter_rows())


def loader_loop(config: dict) -> None:
    """``prepare_data_loader`` over indices; every rank dumps what it saw per pass,
    and the device of its batches; with ``amp`` a few mixed-precision steps."""
    from torch.utils.data import DataLoader, TensorDataset

    from fedexec.train.torch import (
        accelerate,
        backward,
        enable_reproducibility,
        get_device,
        prepare_data_loader,
        prepare_optimizer,
    )

    enable_reproducibility(config.get("seed", 0))
    rank = train.get_context().get_world_rank()
    if config.get("amp"):
        accelerate(amp=True)
    model = prepare_model(torch.nn.Linear(1, 1))
    opt = prepare_optimizer(torch.optim.SGD(model.parameters(), lr=0.01))
    dataset = TensorDataset(torch.arange(config["n"], dtype=torch.float32).unsqueeze(1))
    loader = prepare_data_loader(DataLoader(dataset, batch_size=4, shuffle=True))
    seen = []
    dtypes = set()
    for _ in range(2):
        ids = []
        for (x,) in loader:
            ids.extend(int(v) for v in x.squeeze(1))
            out = model(x)
            dtypes.add(str(out.dtype))
            backward(out.float().mean())
            opt.step()
            opt.zero_grad()
        seen.append(ids)
    dump(config["out"], f"loader{rank}.json",
         {"seen": seen, "device": str(get_device()), "dtypes": sorted(dtypes),
          "random": torch.rand(1).item()})
    train.report({"done": 1})


def threads_loop() -> None:
    """Reports torch's math threads and the pid of the process that forked this
    worker (with ``worker_preload``: the node that imported torch)."""
    train.report({"threads": torch.get_num_threads(), "parent": os.getppid(),
                  "torch_in_parent": _imported_in_parent()})


def _imported_in_parent() -> bool:
    with open(f"/proc/{os.getppid()}/maps") as f:
        return "libtorch" in f.read()
