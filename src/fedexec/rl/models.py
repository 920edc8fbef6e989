"""Torch models and action distributions (imported only when a policy is built).

``FullyConnectedNetwork`` maps a flat observation to the inputs of the action
distribution and a value estimate: ``forward(obs) -> (dist_inputs, value)``.
With ``vf_share_layers`` the value head sits on the policy's last hidden layer;
otherwise the value function is a separate MLP of the same shape. Weights are
initialised as RLlib's classic models do (normalised columns: std 1.0 for hidden
layers and the value head, 0.01 for the action head), which matters for PPO.

Distributions: ``Categorical`` (Discrete actions, inputs = logits) and
``DiagGaussian`` (Box actions, inputs = means and log-stds, or only means with
``free_log_std``: then the log-stds are a learned vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Categorical", "DiagGaussian", "FullyConnectedNetwork", "activation",
           "build_mlp", "dist_class_for", "normc_"]

_ACTIVATIONS: dict[Any, type[nn.Module] | None] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "swish": nn.SiLU, "silu": nn.SiLU,
    "linear": None, None: None,
}


def activation(name: Any) -> type[nn.Module] | None:
    """The torch activation class ``name`` names (``"linear"``/None: none)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: use one of tanh, relu, elu, swish, linear")
    return _ACTIVATIONS[name]


def normc_(layer: nn.Linear, std: float) -> nn.Linear:
    """Initialise ``layer``'s weight with columns of norm ``std``, its bias with 0."""
    with torch.no_grad():
        weight = torch.randn_like(layer.weight)
        weight *= std / weight.pow(2).sum(dim=1, keepdim=True).sqrt()
        layer.weight.copy_(weight)
        layer.bias.zero_()
    return layer


def build_mlp(in_size: int, hiddens: Sequence[int], act: Any, out_size: int | None = None,
              out_std: float = 1.0) -> tuple[nn.Sequential, int]:
    """Linear layers of ``hiddens`` sizes with ``act`` between, then an optional
    output layer; returns the module and its output size."""
    layers: list[nn.Module] = []
    size = in_size
    act_cls = activation(act)
    for hidden in hiddens:
        layers.append(normc_(nn.Linear(size, int(hidden)), 1.0))
        if act_cls is not None:
            layers.append(act_cls())
        size = int(hidden)
    if out_size is not None:
        layers.append(normc_(nn.Linear(size, out_size), out_std))
        size = out_size
    return nn.Sequential(*layers), size


class FullyConnectedNetwork(nn.Module):
    """An MLP policy with a value head (see the module docstring).

    Args:
        obs_size: length of the flat observation.
        num_outputs: number of distribution inputs.
        model_config: ``config.model`` (``fcnet_hiddens``, ``fcnet_activation``,
            ``vf_share_layers``, ``free_log_std``).
    """

    def __init__(self, obs_size: int, num_outputs: int, model_config: dict[str, Any]) -> None:
        super().__init__()
        hiddens = list(model_config.get("fcnet_hiddens", [256, 256]))
        act = model_config.get("fcnet_activation", "tanh")
        self.vf_share_layers = bool(model_config.get("vf_share_layers", False))
        self.free_log_std = bool(model_config.get("free_log_std", False))
        outputs = num_outputs // 2 if self.free_log_std else num_outputs
        self.trunk, size = build_mlp(obs_size, hiddens, act)
        self.logits = normc_(nn.Linear(size, outputs), 0.01)
        self.log_std = nn.Parameter(torch.zeros(num_outputs - outputs)) if self.free_log_std \
            else None
        if self.vf_share_layers:
            self.value_branch = normc_(nn.Linear(size, 1), 1.0)
            self.value_net: nn.Module | None = None
        else:
            self.value_net, vsize = build_mlp(obs_size, hiddens, act)
            self.value_branch = normc_(nn.Linear(vsize, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(obs)
        out = self.logits(features)
        if self.log_std is not None:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        value_in = features if self.value_net is None else self.value_net(obs)
        return out, self.value_branch(value_in).squeeze(-1)


class Categorical:
    """A categorical distribution over ``logits``' last dimension."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs
        self.dist = torch.distributions.Categorical(logits=inputs, validate_args=False)

    @staticmethod
    def required_inputs(action_space: Any) -> int:
        return int(action_space.n)

    @staticmethod
    def sample_numpy(inputs: np.ndarray, explore: bool, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, logp)`` for a batch of logits, in numpy (acting in the env
        runners without torch.distributions' per-call overhead)."""
        shifted = inputs - inputs.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        if explore:
            cdf = np.cumsum(np.exp(log_probs), axis=-1)
            u = rng.random((len(inputs), 1)) * cdf[:, -1:]
            actions = np.minimum((cdf < u).sum(axis=-1), inputs.shape[-1] - 1)
        else:
            actions = np.argmax(inputs, axis=-1)
        return actions, np.take_along_axis(log_probs, actions[:, None], axis=-1)[:, 0]

    def sample(self) -> torch.Tensor:
        return self.dist.sample()

    def deterministic_sample(self) -> torch.Tensor:
        return torch.argmax(self.inputs, dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(actions.long())

    def entropy(self) -> torch.Tensor:
        return self.dist.entropy()

    def kl(self, other: Any) -> torch.Tensor:
        return torch.distributions.kl_divergence(self.dist, other.dist)


class DiagGaussian:
    """A Gaussian with diagonal covariance; inputs are ``[means, log_stds]``."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs
        mean, log_std = torch.chunk(inputs, 2, dim=-1)
        self.mean = mean
        self.dist = torch.distributions.Normal(mean, torch.exp(log_std.clamp(-20.0, 2.0)),
                                               validate_args=False)

    @staticmethod
    def required_inputs(action_space: Any) -> int:
        return 2 * int(np.prod(action_space.shape))

    @staticmethod
    def sample_numpy(inputs: np.ndarray, explore: bool, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, logp)`` for a batch of inputs, in numpy (see Categorical's)."""
        mean, log_std = np.split(inputs, 2, axis=-1)
        log_std = np.clip(log_std, -20.0, 2.0)
        std = np.exp(log_std)
        actions = mean + std * rng.standard_normal(mean.shape) if explore else mean
        logp = (-0.5 * ((actions - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi))
        return actions.astype(np.float32), logp.sum(axis=-1)

    def sample(self) -> torch.Tensor:
        return self.dist.sample()

    def deterministic_sample(self) -> torch.Tensor:
        return self.mean

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(actions.reshape(self.mean.shape)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return self.dist.entropy().sum(-1)

    def kl(self, other: Any) -> torch.Tensor:
        return torch.distributions.kl_divergence(self.dist, other.dist).sum(-1)


def dist_class_for(action_space: Any) -> type[Categorical] | type[DiagGaussian]:
    """The distribution of actions in ``action_space`` (Discrete or Box)."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return Categorical
    if isinstance(action_space, spaces.Box):
        return DiagGaussian
    raise ValueError(f"action space {action_space} is not supported: fedexec.rl handles "
                     "Discrete and Box actions")
