"""The cluster config (``cluster.yaml``): its JSON schema, loading, validation and
defaults.

``load_config(path)`` reads YAML (PyYAML) and ``validate_config(mapping)`` checks a
mapping against :data:`SCHEMA` (the ``jsonschema`` package) and against the rules a
schema cannot say (``head_node_type`` names a node type, ``min_workers <=
max_workers``, ...). Both return a :class:`ClusterConfig` with every default filled
in, or raise :class:`~fedexec.exceptions.ClusterConfigError` naming each bad key
path (``available_node_types.cpu4.min_workers``) and what is allowed there.

The dataclasses themselves need neither package, so the scaling policy and its
tests run without the ``autoscaler`` extra.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import BackendUnavailableError, ClusterConfigError

__all__ = ["DEFAULTS", "SCHEMA", "ClusterConfig", "NodeTypeConfig", "load_config",
           "validate_config"]

_COUNT = {"type": "integer", "minimum": 0, "description": "an integer >= 0"}
_COMMANDS = {"type": "array", "items": {"type": "string"},
             "description": "a list of shell commands (strings)"}
_RESOURCES = {
    "type": "object",
    "additionalProperties": {"type": "number", "minimum": 0,
                             "description": "a number >= 0"},
    "description": "a mapping of resource name to amount >= 0, e.g. {CPU: 4, GPU: 1}",
}

#: The JSON schema a cluster config must satisfy (before defaults are filled in).
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "description": "a cluster config mapping",
    "additionalProperties": False,
    "properties": {
        "cluster_name": {"type": "string", "minLength": 1,
                         "description": "a non-empty string"},
        "max_workers": {**_COUNT, "description": "an integer >= 0: worker nodes in all"},
        "idle_timeout_minutes": {"type": "number", "minimum": 0,
                                 "description": "a number of minutes >= 0"},
        "upscaling_speed": {"type": "number", "exclusiveMinimum": 0,
                            "description": "a number > 0 (1.0: the cluster may at most "
                                           "double per round)"},
        "provider": {
            "type": "object", "required": ["type"],
            "description": "a mapping with at least type: local | fake | ssh | "
                           "module:Class of a plugin (see the README for each one's keys)",
            "properties": {"type": {"type": "string", "minLength": 1,
                                    "description": "a provider name: local, fake, ssh, "
                                                   "or module:Class of a plugin"}},
        },
        "auth": {
            "type": "object", "additionalProperties": False,
            "description": "a mapping with ssh_user and ssh_private_key",
            "properties": {"ssh_user": {"type": "string", "description": "a user name"},
                           "ssh_private_key": {"type": "string",
                                               "description": "a path to a key file"}},
        },
        "available_node_types": {
            "type": "object", "minProperties": 1,
            "description": "a mapping of node type name to {resources, min_workers, "
                           "max_workers, node_config}",
            "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "description": "a node type: {resources, min_workers, max_workers, "
                               "node_config}",
                "properties": {
                    "resources": _RESOURCES,
                    "min_workers": _COUNT,
                    "max_workers": _COUNT,
                    "node_config": {"type": "object",
                                    "description": "a mapping passed to the provider"},
                },
            },
        },
        "head_node_type": {"type": "string",
                           "description": "the name of one of available_node_types"},
        "file_mounts": {"type": "object",
                        "additionalProperties": {"type": "string",
                                                 "description": "a local path"},
                        "description": "a mapping of remote path to local path"},
        "setup_commands": _COMMANDS,
        "head_start_commands": _COMMANDS,
        "worker_start_commands": _COMMANDS,
    },
}

#: Top-level defaults (node types get ``min_workers`` 0, ``max_workers`` the
#: cluster's, ``node_config`` {}).
DEFAULTS: dict[str, Any] = {
    "cluster_name": "default",
    "max_workers": 2,
    "idle_timeout_minutes": 5.0,
    "upscaling_speed": 1.0,
    "provider": {"type": "local"},
    "auth": {},
    "available_node_types": {
        "head": {"resources": {"CPU": 1}, "max_workers": 0},
        "worker": {"resources": {"CPU": 1}},
    },
    "head_node_type": "head",
    "file_mounts": {},
    "setup_commands": [],
    "head_start_commands": [],
    "worker_start_commands": [],
}


@dataclass(frozen=True)
class NodeTypeConfig:
    """One kind of node the autoscaler may launch: what it offers (``resources``)
    and how many workers of it may exist (``min_workers`` .. ``max_workers``)."""

    name: str
    resources: Mapping[str, float]
    min_workers: int = 0
    max_workers: int = 0
    node_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    """A validated cluster config with every default filled in. ``max_workers``
    bounds the worker nodes (the head not counted) of all types together."""

    node_types: Mapping[str, NodeTypeConfig]
    head_node_type: str
    max_workers: int = 2
    idle_timeout_minutes: float = 5.0
    upscaling_speed: float = 1.0
    cluster_name: str = "default"
    provider: Mapping[str, Any] = field(default_factory=lambda: {"type": "local"})
    auth: Mapping[str, str] = field(default_factory=dict)
    file_mounts: Mapping[str, str] = field(default_factory=dict)
    setup_commands: tuple[str, ...] = ()
    head_start_commands: tuple[str, ...] = ()
    worker_start_commands: tuple[str, ...] = ()


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _describe(error: Any) -> str:
    """What is wrong at one error's path, and what is allowed there."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = sorted(schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in known)
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return f"unknown key {', '.join(hints)}; allowed keys: {', '.join(known)}"
    if error.validator == "required":
        return f"{error.message}; {schema.get('description', '')}".rstrip("; ")
    allowed = schema.get("description")
    return f"{error.instance!r} is not allowed" + (f": expected {allowed}" if allowed else
                                                   f" ({error.message})")


def _schema_errors(raw: Any) -> list[tuple[str, str]]:
    try:
        import jsonschema
    except ImportError as exc:
        raise BackendUnavailableError(
            "validating a cluster config needs the jsonschema package: "
            'pip install "fedexec[autoscaler]"') from exc
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: [str(p) for p in e.path])
    return [(_key_path(error.path), _describe(error)) for error in errors]


def _rule_errors(raw: Mapping[str, Any], cluster_max: int) -> list[tuple[str, str]]:
    """The checks a schema cannot state: cross-key references and bounds."""
    out = []
    types = raw.get("available_node_types", DEFAULTS["available_node_types"])
    head = raw.get("head_node_type")
    if head is None and "available_node_types" in raw:
        out.append(("head_node_type", "missing: name the head's node type, one of "
                    + ", ".join(sorted(types))))
    elif head is not None and head not in types:
        out.append(("head_node_type", f"{head!r} is not a node type; expected one of "
                    + ", ".join(sorted(types))))
    min_sum = 0
    for name, spec in sorted(types.items()):
        low = int(spec.get("min_workers", 0))
        high = int(spec.get("max_workers", 0 if name == head else cluster_max))
        if low > high:
            out.append((f"available_node_types.{name}.min_workers",
                        f"{low} is more than max_workers {high}; expected <= {high}"))
        if name != head:
            min_sum += low
    if min_sum > cluster_max:
        out.append(("max_workers", f"{cluster_max} is less than the node types' "
                    f"min_workers together ({min_sum}); expected >= {min_sum}"))
    return out


def validate_config(raw: Any, source: str = "cluster config") -> ClusterConfig:
    """Check ``raw`` (a mapping, as loaded from YAML) and return it as a
    :class:`ClusterConfig` with defaults filled in. ``ClusterConfigError`` names
    every bad key path and what is allowed there."""
    errors = _schema_errors(raw)
    if not errors:
        errors = _rule_errors(raw, int(raw.get("max_workers", DEFAULTS["max_workers"])))
    if errors:
        lines = "\n".join(f"  {path}: {why}" for path, why in errors)
        raise ClusterConfigError(f"{source} is invalid ({len(errors)} problem"
                                 f"{'s' if len(errors) > 1 else ''}):\n{lines}", errors)
    merged = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(dict(raw))}
    cluster_max = int(merged["max_workers"])
    types = {}
    for name, spec in merged["available_node_types"].items():
        is_head = name == merged["head_node_type"]
        high = int(spec.get("max_workers", 0 if is_head else cluster_max))
        types[name] = NodeTypeConfig(
            name=name, resources={k: float(v) for k, v in spec.get("resources", {}).items()},
            min_workers=int(spec.get("min_workers", 0)), max_workers=high,
            node_config=dict(spec.get("node_config", {})))
    return ClusterConfig(
        node_types=types, head_node_type=merged["head_node_type"], max_workers=cluster_max,
        idle_timeout_minutes=float(merged["idle_timeout_minutes"]),
        upscaling_speed=float(merged["upscaling_speed"]),
        cluster_name=merged["cluster_name"], provider=dict(merged["provider"]),
        auth=dict(merged["auth"]), file_mounts=dict(merged["file_mounts"]),
        setup_commands=tuple(merged["setup_commands"]),
        head_start_commands=tuple(merged["head_start_commands"]),
        worker_start_commands=tuple(merged["worker_start_commands"]))


def load_config(path: str) -> ClusterConfig:
    """Read a YAML cluster config from ``path`` and validate it (see
    :func:`validate_config`); ``ClusterConfigError`` for bad YAML too."""
    try:
        import yaml
    except ImportError as exc:
        raise BackendUnavailableError(
            'reading a cluster config needs PyYAML: pip install "fedexec[autoscaler]"'
        ) from exc
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"{path} is not valid YAML: {exc}",
                                 [("(top level)", str(exc))]) from exc
    if raw is None:
        raw = {}
    return validate_config(raw, source=path)

