"""Cluster config loading and validation: defaults, and errors naming the bad key
path and what is allowed there."""

from __future__ import annotations

import pytest

pytest.importorskip("yaml")
pytest.importorskip("jsonschema")

from fedexec.autoscaler import load_config, validate_config
from fedexec.exceptions import ClusterConfigError

GOOD = """
cluster_name: demo
max_workers: 6
idle_timeout_minutes: 0.5
provider: {type: local}
head_node_type: head
available_node_types:
  head: {resources: {CPU: 1}}
  cpu4: {resources: {CPU: 4}, min_workers: 1, max_workers: 3}
  gpu: {resources: {CPU: 8, GPU: 1}}
worker_start_commands: ["fedexec start --address $FEDEXEC_HEAD"]
"""


def write(tmp_path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return str(path)


def test_load_fills_in_defaults(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.cluster_name == "demo" and cfg.max_workers == 6
    assert cfg.idle_timeout_minutes == 0.5 and cfg.upscaling_speed == 1.0
    assert cfg.node_types["cpu4"].resources == {"CPU": 4.0}
    assert (cfg.node_types["cpu4"].min_workers, cfg.node_types["cpu4"].max_workers) == (1, 3)
    assert cfg.node_types["gpu"].max_workers == 6  # the cluster's
    assert cfg.node_types["head"].max_workers == 0  # the head type launches no workers
    assert cfg.worker_start_commands == ("fedexec start --address $FEDEXEC_HEAD",)
    assert cfg.setup_commands == () and dict(cfg.file_mounts) == {}


def test_empty_file_is_all_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.provider == {"type": "local"} and cfg.head_node_type == "head"
    assert set(cfg.node_types) == {"head", "worker"}


def errors_of(raw) -> list[tuple[str, str]]:
    with pytest.raises(ClusterConfigError) as info:
        validate_config(raw, source="cluster.yaml")
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("cluster.yaml is invalid")
    return info.value.errors


def test_unknown_key_is_named_with_a_suggestion():
    (path, why), = errors_of({"max_worker": 3})
    assert path == "(top level)"
    assert "unknown key 'max_worker' (did you mean 'max_workers'?)" in why
    assert "allowed keys: auth, available_node_types" in why


def test_bad_value_names_its_key_path_and_what_is_allowed():
    raw = {"head_node_type": "h", "available_node_types": {
        "h": {"resources": {"CPU": 1}}, "cpu4": {"resources": {"CPU": -4}, "min_workers": 1.5}}}
    errs = dict(errors_of(raw))
    assert set(errs) == {"available_node_types.cpu4.resources.CPU",
                         "available_node_types.cpu4.min_workers"}
    assert errs["available_node_types.cpu4.resources.CPU"] == \
        "-4 is not allowed: expected a number >= 0"
    assert "expected an integer >= 0" in errs["available_node_types.cpu4.min_workers"]


def test_cross_key_rules():
    raw = {"max_workers": 1, "available_node_types": {
        "a": {"resources": {}, "min_workers": 2, "max_workers": 1},
        "b": {"resources": {}, "min_workers": 1}}}
    errs = dict(errors_of(raw))
    assert "missing: name the head's node type, one of a, b" in errs["head_node_type"]
    assert errs["available_node_types.a.min_workers"] == \
        "2 is more than max_workers 1; expected <= 1"
    assert "min_workers together (3)" in errs["max_workers"]
    (path, why), = errors_of({"head_node_type": "nope"})
    assert (path, why) == ("head_node_type", "'nope' is not a node type; expected one of "
                                             "head, worker")


def test_provider_needs_a_type_and_bad_yaml_is_reported(tmp_path):
    (path, why), = errors_of({"provider": {"hosts": ["a"]}})
    assert path == "provider" and "'type' is a required property" in why
    with pytest.raises(ClusterConfigError, match="is not valid YAML"):
        load_config(write(tmp_path, "max_workers: [1,\n"))
    (path, why), = errors_of([1, 2])
    assert path == "(top level)" and "expected a cluster config mapping" in why
