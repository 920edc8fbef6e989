"""``TorchPolicy``: a model, its action distribution, its loss and its optimizer.

The same class runs in two places: in each env runner (``compute_actions`` and
``postprocess_trajectory``, weights set from the learner) and in the algorithm's
process, where it learns (``learn_on_batch`` / ``learn_epochs`` call ``loss``).

An algorithm customises it by subclassing and overriding:

- ``loss(batch) -> (loss tensor, stats dict)`` — the algorithm's objective on a
  dict of tensors (``SampleBatch`` columns);
- ``postprocess_trajectory(batch) -> batch`` — per trajectory, in the runner
  (``ActorCriticPolicy`` adds GAE advantages);
- ``make_model()`` — another network (a Q-network); ``compute_actions`` — another
  way to act (epsilon-greedy);
- ``get_state``/``set_state`` for extra state to checkpoint (a target network).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .env import obs_size, preprocess_obs
from .models import FullyConnectedNetwork, dist_class_for
from .postprocessing import compute_advantages
from .sample_batch import SampleBatch

__all__ = ["ActorCriticPolicy", "TorchPolicy"]


class TorchPolicy:
    """A torch policy for one observation and action space.

    Args:
        observation_space: the env's (gymnasium) observation space.
        action_space: the env's action space.
        config: the algorithm's :class:`~fedexec.rl.AlgorithmConfig`.
        device: where the model lives (``"cpu"``; the learner may use ``"cuda"``).
    """

    def __init__(self, observation_space: Any, action_space: Any, config: Any,
                 device: str = "cpu") -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config
        self.device = torch.device(device)
        self.dist_class = dist_class_for(action_space)
        self.model = self.make_model().to(self.device)
        #: the random source of exploration (seeded from torch's seed: config.seed)
        self.rng = np.random.default_rng(torch.initial_seed() % 2**63)
        self._optimizer: torch.optim.Optimizer | None = None

    # -- what algorithms override ---------------------------------------------------
    def make_model(self) -> nn.Module:
        """The network: ``forward(obs) -> (dist_inputs, value)``."""
        return FullyConnectedNetwork(obs_size(self.observation_space),
                                     self.dist_class.required_inputs(self.action_space),
                                     self.config.model)

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise on ``batch`` and stats to report."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(batch)")

    def postprocess_trajectory(self, batch: SampleBatch) -> SampleBatch:
        """Called by the env runner on each trajectory piece (one env, one episode,
        at most one fragment); the default adds nothing."""
        return batch

    # -- acting -----------------------------------------------------------------------
    def compute_actions(self, obs: np.ndarray, explore: bool = True
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for a batch of (preprocessed, filtered) observations, and the
        extras recorded with them (``action_logp``, ``vf_preds``, ``action_dist_inputs``)."""
        with torch.no_grad():
            inputs_t, values_t = self.model(self._tensor(obs))
        inputs = inputs_t.cpu().numpy().astype(np.float64)
        actions, logp = self.dist_class.sample_numpy(inputs, explore, self.rng)
        return actions, {
            SampleBatch.ACTION_LOGP: logp.astype(np.float32),
            SampleBatch.VF_PREDS: values_t.cpu().numpy().astype(np.float32),
            SampleBatch.ACTION_DIST_INPUTS: inputs.astype(np.float32),
        }

    def compute_single_action(self, obs: Any, explore: bool = False,
                              preprocessed: bool = False) -> Any:
        """The action for one observation (raw unless ``preprocessed``)."""
        flat = obs if preprocessed else preprocess_obs(self.observation_space, obs)
        actions, _ = self.compute_actions(np.asarray(flat, dtype=np.float32)[None], explore)
        return actions[0]

    def value(self, obs: np.ndarray) -> np.ndarray:
        """The value estimates of a batch of observations."""
        with torch.no_grad():
            _, values = self.model(self._tensor(obs))
        return values.cpu().numpy()

    # -- learning ---------------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = self.make_optimizer()
        return self._optimizer

    def learn_on_batch(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One gradient step on ``batch`` (a SampleBatch or a dict of tensors); returns
        the loss's stats (and ``grad_gnorm``)."""
        if isinstance(batch, SampleBatch):
            batch = self.to_tensors(batch)
        loss, stats = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        clip = self.config.grad_clip
        norm = nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        self.optimizer.step()
        return {**stats, "total_loss": float(loss.detach()), "grad_gnorm": float(norm)}

    def learn_epochs(self, batch: SampleBatch, num_epochs: int, minibatch_size: int,
                     shuffle: bool = True, rng: np.random.Generator | None = None
                     ) -> dict[str, float]:
        """``num_epochs`` passes over ``batch`` in minibatches, one step each; the
        mean of each stat over all steps."""
        totals: dict[str, float] = {}
        steps = 0
        tensors = self.to_tensors(batch)  # once; minibatches index into it
        rng = rng or np.random.default_rng()
        n = len(batch)
        for _ in range(num_epochs):
            order = torch.as_tensor(rng.permutation(n) if shuffle else np.arange(n),
                                    device=self.device)
            for start in range(0, n, minibatch_size):
                end = min(n, start + minibatch_size)
                if start > 0 and end - start < minibatch_size // 2:
                    break  # as SampleBatch.minibatches: no tiny last minibatch
                index = order[start:end]
                minibatch = {k: v[index] for k, v in tensors.items()}
                for key, value in self.learn_on_batch(minibatch).items():
                    totals[key] = totals.get(key, 0.0) + value
                steps += 1
        return {key: value / max(1, steps) for key, value in totals.items()}

    def to_tensors(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()
                if v.dtype != object}

    def _tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)

    # -- state --------------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """The model's parameters as numpy arrays (what env runners receive)."""
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        self.model.load_state_dict({k: torch.tensor(np.asarray(v))
                                    for k, v in weights.items()})

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the model's and the optimizer's state."""
        state: dict[str, Any] = {"model": self.model.state_dict()}
        if self._optimizer is not None:
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


class ActorCriticPolicy(TorchPolicy):
    """A policy whose trajectories get GAE advantages and value targets
    (``config.gamma``, ``config.lambda_``, ``config.use_gae``, ``config.use_critic``)."""

    def postprocess_trajectory(self, batch: SampleBatch) -> SampleBatch:
        cfg = self.config
        if batch[SampleBatch.TERMINATEDS][-1]:
            last_r = 0.0
        else:
            last_r = float(self.value(batch[SampleBatch.NEXT_OBS][-1:])[0])
        return compute_advantages(batch, last_r, cfg.gamma, getattr(cfg, "lambda_", 1.0),
                                  getattr(cfg, "use_gae", True), getattr(cfg, "use_critic", True))
