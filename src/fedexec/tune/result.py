"""``Result``: what one trial produced (as Ray's ``ray.tune.Result``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import Checkpoint
from .logger.logger import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE

__all__ = ["Result"]


@dataclass
class Result:
    """One trial's outcome.

    Attributes:
        metrics: its last result.
        config: its config.
        checkpoint: its latest checkpoint (None if it saved none).
        best_checkpoints: ``(Checkpoint, metrics)`` of every checkpoint kept.
        error: the error it ended with (None if it ended normally).
        path: the trial's directory.
    """

    metrics: dict[str, Any]
    config: dict[str, Any]
    checkpoint: Checkpoint | None = None
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    error: BaseException | None = None
    path: str = ""
    _metrics_dataframe: Any = None

    @property
    def metrics_dataframe(self) -> Any:
        """Every result of the trial, one row each (a pandas DataFrame read from
        ``progress.csv``, else ``result.json``)."""
        if self._metrics_dataframe is None:
            self._metrics_dataframe = trial_dataframe(self.path)
        return self._metrics_dataframe

    @property
    def filesystem(self) -> None:
        return None

    @classmethod
    def from_path(cls, path: str) -> Result:
        """The Result of a trial directory written by an earlier run."""
        import json

        config: dict[str, Any] = {}
        params = os.path.join(path, "params.json")
        if os.path.exists(params):
            with open(params) as f:
                config = json.load(f)
        rows = _json_rows(path)
        checkpoints = sorted(d for d in os.listdir(path) if d.startswith("checkpoint_"))
        latest = Checkpoint(os.path.join(path, checkpoints[-1])) if checkpoints else None
        return cls(metrics=rows[-1] if rows else {}, config=config, checkpoint=latest,
                   path=path)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.metrics.items()
                 if k not in ("config", "date", "hostname", "pid", "timestamp")}
        error = f", error={self.error!r}" if self.error is not None else ""
        return f"Result(metrics={shown}, path={self.path!r}, checkpoint={self.checkpoint}{error})"


def _json_rows(path: str) -> list[dict[str, Any]]:
    import json

    rows = []
    result_file = os.path.join(path, EXPR_RESULT_FILE)
    if os.path.exists(result_file):
        with open(result_file) as f:
            for line in f:
                line = line.strip()
                if line:
                    with_config = json.loads(line)
                    with_config.pop("config", None)
                    rows.append(with_config)
    return rows


def trial_dataframe(path: str) -> Any:
    """Every result in a trial directory as a pandas DataFrame."""
    import pandas as pd

    progress = os.path.join(path, EXPR_PROGRESS_FILE)
    if os.path.exists(progress) and os.path.getsize(progress) > 0:
        return pd.read_csv(progress)
    return pd.DataFrame(_json_rows(path))


def trial_rows(path: str) -> list[dict[str, Any]]:
    """Every result in a trial directory (from ``result.json``)."""
    return _json_rows(path)
