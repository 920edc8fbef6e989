"""fedexec.train side by side with plain ``torchrun`` DDP and Ray Train (issue 14).

Usage::

    python benchmarks/train.py [--systems torchrun,fedexec,fedexec-preload,ray]
                               [--models mlp,cnn]
                               [--epochs 2] [--json out.json]

The same training in every system: 2 workers (ranks), DDP over gloo on CPU, the
same model, synthetic data made in each rank (no loading differences), epochs
and batch size; the train-loop systems report once per epoch. Each (system,
model) runs in a child process of its own, from a cold start. Measured:

    first step   seconds from the start of training (``torchrun``: its launch;
                 fedexec/Ray: ``fit()``, the runtime already started) to rank 0's
                 first optimizer step
    total        wall time of the child process (runtime start, training, shutdown)

``fedexec-preload`` starts the runtime with ``worker_preload=["torch"]``: the node
imports torch once and forks workers that have it (the import moves from ``fit()``
to the runtime's start, which the total still counts).

Targets (issue 14): total <= 1.05x torchrun and <= 0.8x Ray Train; fit() to first
step <= 1.5 s. ``--python-ray`` names the interpreter with ``ray[train]`` installed
(Ray's system is skipped if it cannot import ray).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

MARK = "@@RESULT@@ "
HERE = os.path.abspath(__file__)
SIZES = {"mlp": {"samples": 16384, "batch": 128}, "cnn": {"samples": 4096, "batch": 64}}


# ------------------------------------------------------------------ the shared workload
def make_model(name: str) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def run_epochs(model: Any, name: str, rank: int, world: int, epochs: int, mark: str,
               report: Any = None) -> None:
    """Train ``model`` (already DDP-wrapped) on this rank's share of synthetic data."""
    import torch

    per_rank = SIZES[name]["samples"] // world
    batch = SIZES[name]["batch"]
    g = torch.Generator().manual_seed(rank)
    shape = (per_rank, 784) if name == "mlp" else (per_rank, 3, 32, 32)
    x, y = torch.randn(*shape, generator=g), torch.randint(0, 10, (per_rank,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    first = True
    for epoch in range(epochs):
        for i in range(0, per_rank, batch):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if first and rank == 0:
                with open(mark, "w") as f:
                    f.write(repr(time.time()))
            first = False
        if report is not None:
            report({"epoch": epoch, "loss": loss.item()})


# ------------------------------------------------------------------ the systems (children)
def child_torchrun(args: argparse.Namespace) -> None:
    """Runs in every rank started by torchrun."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    run_epochs(DistributedDataParallel(make_model(args.model)), args.model, rank, world,
               args.epochs, args.mark)
    dist.destroy_process_group()


def child_fedexec(args: argparse.Namespace) -> float:
    import fedexec
    from fedexec import train
    from fedexec.train import RunConfig, ScalingConfig
    from fedexec.train.torch import TorchTrainer, prepare_model

    model_name, epochs, mark = args.model, args.epochs, args.mark

    def loop(config: dict[str, Any]) -> None:
        ctx = train.get_context()
        run_epochs(prepare_model(make_model(model_name)), model_name, ctx.get_world_rank(),
                   ctx.get_world_size(), epochs, mark, train.report)

    preload = ["torch"] if args.child == "fedexec-preload" else []
    fedexec.init(num_cpus=2, worker_preload=preload)
    began = time.time()
    TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(storage_path=tempfile.mkdtemp(), name="bench")).fit()
    fedexec.shutdown()
    return began


def child_ray(args: argparse.Namespace) -> float:
    import ray
    from ray import train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer, prepare_model

    model_name, epochs, mark = args.model, args.epochs, args.mark

    def loop(config: dict[str, Any]) -> None:
        ctx = train.get_context()
        run_epochs(prepare_model(make_model(model_name)), model_name, ctx.get_world_rank(),
                   ctx.get_world_size(), epochs, mark, train.report)

    ray.init(num_cpus=2, include_dashboard=False)
    began = time.time()
    TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(storage_path=tempfile.mkdtemp(), name="bench")).fit()
    ray.shutdown()
    return began


# ------------------------------------------------------------------ the parent
def measure(system: str, model: str, epochs: int, python_ray: str) -> dict[str, Any]:
    mark = tempfile.mktemp(prefix="first_step_")
    common = ["--model", model, "--epochs", str(epochs), "--mark", mark]
    if system == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29533", HERE, "--child", "torchrun", *common]
    else:
        python = python_ray if system == "ray" else sys.executable
        cmd = [python, HERE, "--child", system, *common]
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    total = time.time() - start
    if out.returncode != 0:
        return {"system": system, "model": model, "error": out.stderr[-1500:]}
    began = start
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            began = json.loads(line[len(MARK):])["began"]
    with open(mark) as f:
        first = float(f.read()) - began
    os.remove(mark)
    return {"system": system, "model": model, "first_step_s": round(first, 2),
            "total_s": round(total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--systems", default="torchrun,fedexec,fedexec-preload,ray")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--python-ray", default=sys.executable)
    parser.add_argument("--child")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--mark")
    args = parser.parse_args()
    if args.child == "torchrun":
        child_torchrun(args)
        return
    if args.child in ("fedexec", "fedexec-preload", "ray"):
        began = (child_ray if args.child == "ray" else child_fedexec)(args)
        print(MARK + json.dumps({"began": began}), flush=True)
        return
    rows = []
    for model in args.models.split(","):
        for system in args.systems.split(","):
            if system == "ray" and subprocess.run(
                    [args.python_ray, "-c", "import ray.train"], capture_output=True
            ).returncode != 0:
                print(f"skipping ray: {args.python_ray} cannot import ray.train")
                continue
            row = measure(system, model, args.epochs, args.python_ray)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | system | fit/launch to first step (s) | total wall (s) | total / torchrun |")
    print("|---|---|---|---|---|")
    for row in rows:
        base = next((r for r in rows if r["model"] == row["model"]
                     and r["system"] == "torchrun" and "total_s" in r), None)
        ratio = (f"{row['total_s'] / base['total_s']:.2f}x" if base and "total_s" in row
                 else "-")
        print(f"| {row['model']} | {row['system']} | {row.get('first_step_s', 'error')} | "
              f"{row.get('total_s', 'error')} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
