"""A small library of algorithms plugged into tune by name, the way ``fedexec.rl``
does it (as RLlib): importing the module registers its algorithm with
``tune.register_trainable``; the algorithm is a ``tune.Trainable`` subclass; its
builder-style config object has ``to_dict()`` and may be passed as the
``param_space`` itself.

``HillClimb`` minimises ``(x - target)^2`` by gradient steps of size ``lr``; its
result has ``episode_reward_mean`` (= minus the loss), as RL results do.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fedexec import tune

NAME = "HILLCLIMB_TEST"


class HillClimbConfig:
    """Builder of HillClimb's config (as RLlib's ``AlgorithmConfig``)."""

    def __init__(self) -> None:
        self.lr = 0.1
        self.target = 3.0

    def training(self, *, lr: Any = None, target: Any = None) -> HillClimbConfig:
        if lr is not None:
            self.lr = lr
        if target is not None:
            self.target = target
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "target": self.target}


class HillClimb(tune.Trainable):
    def setup(self, config: dict[str, Any]) -> None:
        self.x = 0.0

    def step(self) -> dict[str, Any]:
        self.x -= self.config["lr"] * 2 * (self.x - self.config["target"])
        return {"episode_reward_mean": -((self.x - self.config["target"]) ** 2), "x": self.x}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "x.json"), "w") as f:
            json.dump({"x": self.x}, f)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "x.json")) as f:
            self.x = json.load(f)["x"]


tune.register_trainable(NAME, HillClimb)
