"""The autoscaler: clusters that grow and shrink with demand.

- :mod:`.config`: the cluster config (``cluster.yaml``) schema, loading,
  validation and defaults (``load_config``, ``validate_config``).
- :mod:`.policy`: the scaling policy, a pure function ``plan(demand, nodes,
  config, now)`` returning launches and terminations, each with its reason.
- :func:`request_resources`: ask for capacity ahead of demand.
- :mod:`.providers` (the plugin interface, ``local``), :mod:`.ssh_provider`
  (``ssh``, over the command runner in :mod:`.ssh`), :mod:`.fake_provider`
  (``fake``: simulated nodes joining a real head), :mod:`.monitor` (the loop, with
  launch backoff), :mod:`.remote_head` (a head started over SSH), :mod:`.advert`
  (what clients ask before refusing work no node fits), and ``fedexec
  up/down/monitor`` (:mod:`._cli`) and ``exec/submit/attach/rsync-up/rsync-down/
  get-head-ip`` (:mod:`._launcher_cli`).

Reading YAML and validating need the ``autoscaler`` extra
(``pip install "fedexec[autoscaler]"``: PyYAML and jsonschema); the policy does not.
"""

from __future__ import annotations

from .config import ClusterConfig, NodeTypeConfig, load_config, validate_config
from .policy import (
    Demand,
    Launch,
    NodeState,
    PlacementGroupDemand,
    Plan,
    Termination,
    Unmet,
    plan,
)
from .requests import request_resources

__all__ = ["ClusterConfig", "Demand", "Launch", "NodeState", "NodeTypeConfig",
           "PlacementGroupDemand", "Plan", "Termination", "Unmet", "load_config", "plan",
           "request_resources", "validate_config"]
