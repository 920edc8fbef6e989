"""The autoscaling policy: a pure function of the measured load (no I/O).

The controller feeds it the queue depth of a deployment (requests in flight on
its replicas plus requests queued at routers, summed over every router) and
the replica count; it answers the count to run. A change is proposed by
``ceil(load / target_ongoing_requests)`` and applied only after the proposal
has pointed the same way for ``upscale_delay_s`` (up) or ``downscale_delay_s``
(down); a steady load gives a steady proposal, so the count does not oscillate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class AutoscalingConfig:
    """``autoscaling_config=`` of a deployment (Ray's names and defaults)."""

    min_replicas: int = 1
    max_replicas: int = 1
    initial_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"autoscaling_config needs 0 <= min_replicas <= max_replicas and max_replicas "
                f">= 1; got min_replicas={self.min_replicas}, max_replicas={self.max_replicas}")
        if self.initial_replicas is not None and not (
                self.min_replicas <= self.initial_replicas <= self.max_replicas):
            raise ValueError(f"autoscaling_config initial_replicas={self.initial_replicas} is "
                             "not between min_replicas and max_replicas")
        if self.target_ongoing_requests <= 0:
            raise ValueError("autoscaling_config target_ongoing_requests must be > 0")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError("autoscaling_config delays must be >= 0 seconds")

    @classmethod
    def from_value(cls, value: AutoscalingConfig | dict[str, Any]) -> AutoscalingConfig:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"autoscaling_config must be a dict or AutoscalingConfig, got "
                            f"{type(value).__name__}")
        known = {f.name for f in fields(cls)}
        # Ray's older spelling, accepted
        value = dict(value)
        if "target_num_ongoing_requests_per_replica" in value:
            value.setdefault("target_ongoing_requests",
                             value.pop("target_num_ongoing_requests_per_replica"))
        unknown = set(value) - known - {"metrics_interval_s", "look_back_period_s",
                                        "smoothing_factor", "upscale_smoothing_factor",
                                        "downscale_smoothing_factor", "upscaling_factor",
                                        "downscaling_factor"}
        if unknown:
            raise ValueError(f"unknown autoscaling_config keys {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        return cls(**{k: v for k, v in value.items() if k in known})

    @property
    def start_replicas(self) -> int:
        if self.initial_replicas is not None:
            return self.initial_replicas
        return max(1, self.min_replicas)


class AutoscalingPolicy:
    """Decides replica counts for one deployment (see the module docstring)."""

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self._direction = 0
        self._since = 0.0

    def desired(self, load: float) -> int:
        c = self.config
        want = math.ceil(load / c.target_ongoing_requests) if load > 0 else 0
        return min(c.max_replicas, max(c.min_replicas, want))

    def decide(self, current: int, load: float, now: float) -> int:
        """The replica count to run now, given ``current`` and the measured ``load``."""
        want = self.desired(load)
        direction = (want > current) - (want < current)
        if direction == 0:
            self._direction = 0
            return current
        if direction != self._direction:
            self._direction, self._since = direction, now
        delay = self.config.upscale_delay_s if direction > 0 else self.config.downscale_delay_s
        if now - self._since >= delay:
            self._direction = 0
            return want
        return current
