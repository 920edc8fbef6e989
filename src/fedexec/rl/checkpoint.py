"""Algorithm checkpoints: a versioned directory that later versions can load.

Layout (``CHECKPOINT_VERSION`` "1.0")::

    algorithm_state.json   {"checkpoint_version": "1.0", "algorithm": "PPO",
                            "fedexec_version", "config": {...modern names, JSON values},
                            "config_pickled": [keys whose values are not JSON],
                            "counters": {...}, "episodes": {...}, "extra": {...}}
    policy_state.pt        torch.save of the policy's state (model, optimizer ...)
    filter_state.json      the observation filter (MeanStdFilter statistics)
    config.pkl             cloudpickle of the config keys that are not JSON (an env
                           class, a creator function); optional

A reader accepts every version with the same major number (and refuses a newer
major with a message saying to upgrade).
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["CHECKPOINT_VERSION", "read_state", "write_config"]

CHECKPOINT_VERSION = "1.0"
STATE_FILE = "algorithm_state.json"
POLICY_FILE = "policy_state.pt"
FILTER_FILE = "filter_state.json"
CONFIG_PICKLE = "config.pkl"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def write_config(directory: str, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split ``config`` into its JSON part and the rest (pickled to ``config.pkl``)."""
    import cloudpickle

    plain = {k: v for k, v in config.items() if _jsonable(v)}
    other = {k: v for k, v in config.items() if k not in plain}
    if other:
        with open(os.path.join(directory, CONFIG_PICKLE), "wb") as f:
            cloudpickle.dump(other, f)
    return plain, sorted(other)


def write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)


def read_state(directory: str) -> dict[str, Any]:
    """The checkpoint's ``algorithm_state.json``, its config completed from ``config.pkl``.

    Raises:
        FileNotFoundError: ``directory`` is not an algorithm checkpoint.
        ValueError: the checkpoint was written by a newer, incompatible version.
    """
    import pickle

    path = os.path.join(os.fspath(directory), STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory} is not a fedexec.rl checkpoint (no {STATE_FILE}): "
                                "pass the directory algo.save() returned")
    with open(path, encoding="utf-8") as f:
        state: dict[str, Any] = json.load(f)
    version = str(state.get("checkpoint_version", "0"))
    if version.split(".")[0] != CHECKPOINT_VERSION.split(".")[0]:
        raise ValueError(f"checkpoint {directory} has version {version}; this fedexec reads "
                         f"version {CHECKPOINT_VERSION.split('.')[0]}.x: upgrade fedexec")
    pickled = os.path.join(directory, CONFIG_PICKLE)
    if state.get("config_pickled") and os.path.exists(pickled):
        with open(pickled, "rb") as f:
            state["config"].update(pickle.load(f))
    return state
