"""Observation filters, kept in step across env runners.

``MeanStdFilter`` normalises each observation by the running mean and standard
deviation of all observations seen (clipped to +-10). Synchronisation, once per
training iteration::

    runner i: filter(obs) updates its running stats and its *delta* (what it saw
              since the last sync) ──sample() returns delta_i──▶ driver
    driver:   global.merge(delta_1 ... delta_n) ──set_state(global) with the
              weights──▶ every runner (its stats := global, delta := empty)

The driver's filter (the global one) is what ``compute_single_action`` uses and
what a checkpoint stores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MeanStdFilter", "NoFilter", "RunningStat", "make_filter"]


class RunningStat:
    """Count, mean and sum of squared deviations (Welford/Chan; mergeable)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.n = 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)

    def push(self, x: np.ndarray) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (x - self.mean)

    def merge(self, other: RunningStat) -> None:
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        self.n = n

    @property
    def std(self) -> np.ndarray:
        if self.n < 2:
            return np.ones_like(self.mean)
        return np.sqrt(self.m2 / (self.n - 1))

    def get_state(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningStat:
        stat = cls(np.shape(state["mean"]))
        stat.n = int(state["n"])
        stat.mean = np.asarray(state["mean"], dtype=np.float64)
        stat.m2 = np.asarray(state["m2"], dtype=np.float64)
        return stat


class NoFilter:
    """Observations pass unchanged."""

    def __call__(self, x: np.ndarray, update: bool = True) -> np.ndarray:
        return x

    def take_delta(self) -> Any:
        return None

    def merge_delta(self, delta: Any) -> None:
        pass

    def get_state(self) -> dict[str, Any]:
        return {"type": "NoFilter"}

    def set_state(self, state: dict[str, Any] | None) -> None:
        pass


class MeanStdFilter:
    """``clip((x - mean) / (std + 1e-8), -clip, clip)`` with running statistics."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0) -> None:
        self.shape = shape
        self.clip = clip
        self.stat = RunningStat(shape)
        self.delta = RunningStat(shape)

    def __call__(self, x: np.ndarray, update: bool = True) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if update:
            self.stat.push(x)
            self.delta.push(x)
        out = (x - self.stat.mean) / (self.stat.std + 1e-8)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def take_delta(self) -> dict[str, Any]:
        """What this filter saw since the last call (and forget it)."""
        delta, self.delta = self.delta, RunningStat(self.shape)
        return delta.get_state()

    def merge_delta(self, delta: dict[str, Any] | None) -> None:
        """Add another filter's delta into this one's statistics."""
        if delta:
            self.stat.merge(RunningStat.from_state(delta))

    def get_state(self) -> dict[str, Any]:
        return {"type": "MeanStdFilter", "clip": self.clip, "stat": self.stat.get_state()}

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Take the (global) statistics; the delta starts empty."""
        if state:
            self.stat = RunningStat.from_state(state["stat"])
            self.clip = float(state.get("clip", self.clip))
        self.delta = RunningStat(self.shape)


def make_filter(name: str, shape: tuple[int, ...]) -> NoFilter | MeanStdFilter:
    """The filter ``config.observation_filter`` names."""
    if name == "MeanStdFilter":
        return MeanStdFilter(shape)
    if name == "NoFilter":
        return NoFilter()
    raise ValueError(f"observation_filter must be 'NoFilter' or 'MeanStdFilter', not {name!r}")
