"""Episode statistics over a sliding window, and the result keys they fill."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

__all__ = ["EpisodeWindow", "episode_stats"]


def episode_stats(returns: list[float], lengths: list[int]) -> dict[str, float]:
    """Mean/max/min return (under both spellings) and mean length; NaN when empty."""
    nan = float("nan")
    r = np.asarray(returns, dtype=np.float64)
    out = {
        "episode_reward_mean": float(r.mean()) if r.size else nan,
        "episode_reward_max": float(r.max()) if r.size else nan,
        "episode_reward_min": float(r.min()) if r.size else nan,
        "episode_len_mean": float(np.mean(lengths)) if lengths else nan,
    }
    for stat in ("mean", "max", "min"):
        out[f"episode_return_{stat}"] = out[f"episode_reward_{stat}"]
    return out


class EpisodeWindow:
    """The last ``size`` finished episodes' returns and lengths."""

    def __init__(self, size: int = 100) -> None:
        self.returns: deque[float] = deque(maxlen=size)
        self.lengths: deque[int] = deque(maxlen=size)
        self.this_iter = 0
        self.total = 0

    def add(self, returns: list[float], lengths: list[int]) -> None:
        self.returns.extend(returns)
        self.lengths.extend(lengths)
        self.this_iter += len(returns)
        self.total += len(returns)

    def stats(self) -> dict[str, Any]:
        """The window's stats, ``episodes_this_iter`` (then reset) and ``episodes_total``."""
        out: dict[str, Any] = episode_stats(list(self.returns), list(self.lengths))
        out["episodes_this_iter"] = self.this_iter
        out["episodes_total"] = self.total
        self.this_iter = 0
        return out

    def get_state(self) -> dict[str, Any]:
        return {"returns": list(self.returns), "lengths": list(self.lengths), "total": self.total}

    def set_state(self, state: dict[str, Any]) -> None:
        self.returns.clear()
        self.lengths.clear()
        self.returns.extend(state.get("returns", []))
        self.lengths.extend(state.get("lengths", []))
        self.total = int(state.get("total", 0))
