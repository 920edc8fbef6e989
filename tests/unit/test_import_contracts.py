"""The import contracts (``[tool.importlinter]`` in pyproject.toml, run by
``lint-imports`` in scripts/test.sh) cover every library, so a library added later
cannot reach into private modules unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("data", "tune", "train", "serve", "rl")


def _contract(name_start: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["name"].startswith(name_start)]
    return contract


def test_every_library_and_integration_uses_only_the_public_api():
    sources = set(_contract("Libraries and integrations")["source_modules"])
    assert "integrations" in sources
    present = [lib for lib in LIBRARIES if (ROOT / "src" / "fedexec" / lib).is_dir()]
    missing = [f"fedexec.{lib}" for lib in present if f"fedexec.{lib}" not in sources]
    assert not missing, f"add {missing} to the contract's source_modules in pyproject.toml"


def test_backends_never_import_a_library():
    forbidden = set(_contract("Backends never import")["forbidden_modules"])
    present = [lib for lib in LIBRARIES if (ROOT / "src" / "fedexec" / lib).is_dir()]
    missing = [f"fedexec.{lib}" for lib in present if f"fedexec.{lib}" not in forbidden]
    assert not missing, f"add {missing} to the contract's forbidden_modules in pyproject.toml"


def test_backends_sit_below_the_executor():
    layers = _contract("Core layers")["layers"]
    flat = [layer.split(" | ") for layer in layers]
    position = {m.strip(): i for i, group in enumerate(flat) for m in group}
    assert position["fedexec.executor"] < position["fedexec.backends"] < position[
        "fedexec._runtime"]
    assert position["fedexec.remote"] < position["fedexec.executor"]
